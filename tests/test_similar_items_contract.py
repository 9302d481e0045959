"""The one query contract, run against every model that makes related lists (like
``implicit``'s shared model tests): relrec's trained tower and each peer."""

from __future__ import annotations

import numpy as np
import pytest

from relrec.config import RunConfig
from relrec.evaluate.peers import EASE, CoVisitation, ImplicitALS, Item2Vec, Popularity
from relrec.related import RelatedItems
from relrec.run import RunData

K = 8


@pytest.fixture(scope="module")
def trained_run(synthetic_run):
    run_dir, _ = synthetic_run(n_items=120, n_topics=5, n_users=300, sessions_per_user=4,
                               session_length=8, autoplay_rate=0.2, popularity_exponent=0.6,
                               seed=3)
    config = RunConfig()
    config.train.max_epochs = 2
    config.train.embedding_dim = config.train.id_dim = 16
    config.train.hidden_dims = [32]
    RelatedItems.fit(run_dir, config, preset="cf")
    return run_dir


MODELS = {
    "relrec": lambda run: RelatedItems.load(run.run_dir),
    "popularity": lambda run: Popularity().fit(run),
    "covisitation": lambda run: CoVisitation().fit(run),
    "ease": lambda run: EASE(l2=20.0).fit(run),
    "als": lambda run: ImplicitALS(factors=8, iterations=3).fit(run),
    "item2vec": lambda run: Item2Vec(vector_size=8, epochs=2).fit(run),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_and_run(request, trained_run):
    run = RunData(trained_run)
    try:
        return MODELS[request.param](run), run
    except ImportError as error:  # an optional peer library; CI installs them all
        pytest.skip(str(error))


def test_shape_types_and_trigger_excluded(model_and_run):
    model, run = model_and_run
    triggers = list(run.item_ids[np.flatnonzero(run.in_train)[:12]])
    ids, scores = model.similar_items(triggers, K)
    assert ids.shape == scores.shape == (len(triggers), K)
    assert scores.dtype == np.float32
    for trigger, row, row_scores in zip(triggers, ids, scores):
        listed = [item for item in row if item]
        assert trigger not in listed and len(set(listed)) == len(listed)
        assert set(listed) <= set(run.item_ids)
        # padding only at the end, with -inf
        assert all(item == "" for item in row[len(listed):])
        assert np.all(np.isneginf(row_scores[len(listed):]))
        assert np.all(np.diff(row_scores[:len(listed)]) <= 1e-5)  # best first


def test_filter_items_removes_and_backfills(model_and_run):
    model, run = model_and_run
    trigger = str(run.item_ids[np.flatnonzero(run.in_train)[0]])
    plain, _ = model.similar_items([trigger], K + 4)
    banned = [item for item in plain[0][:4] if item] + ["no-such-item"]
    filtered, _ = model.similar_items([trigger], K, filter_items=banned)
    kept = [item for item in plain[0] if item and item not in banned][:K]
    assert [item for item in filtered[0] if item] == kept


def test_unknown_trigger_is_a_key_error_naming_it(model_and_run):
    model, _ = model_and_run
    with pytest.raises(KeyError, match="no-such-item"):
        model.similar_items(["no-such-item"], K)


def test_a_list_longer_than_the_catalogue_is_padded(model_and_run):
    model, run = model_and_run
    trigger = str(run.item_ids[np.flatnonzero(run.in_train)[0]])
    ids, scores = model.similar_items([trigger], run.n_items + 3)
    assert ids.shape == (1, run.n_items + 3) and ids[0, -1] == "" and np.isneginf(scores[0, -1])


def test_fit_trains_what_the_cli_trains_and_save_load_round_trips(trained_run, tmp_path):
    run = RunData(trained_run)
    assert run.manifest["train"]["train_config"]["preset"] == "cf"
    assert run.manifest["train"]["train_config"]["logq_correction"] is True
    model = RelatedItems.load(trained_run)
    saved = model.save(tmp_path / "saved")
    again = RelatedItems.load(saved)
    triggers = list(run.item_ids[np.flatnonzero(run.in_train)[:5]])
    np.testing.assert_array_equal(model.similar_items(triggers, K)[0],
                                  again.similar_items(triggers, K)[0])
