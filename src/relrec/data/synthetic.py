"""Synthetic interaction logs and item catalogues with planted structure, for fast tests
whose answers are known: :func:`generate` (in memory, with the planted truth),
:func:`stream_interactions_to_parquet` (large logs in bounded memory) and :func:`write_dataset`.

The generative story — topics, popularity, text, content vectors, sessions with autoplay and
satiation steps, timestamps — is specified in ``docs/SYNTHETIC.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from relrec.manifest import atomic_path
from relrec.vectors import l2_normalize

__all__ = [
    "SyntheticConfig",
    "SyntheticDataset",
    "generate",
    "stream_interactions_to_parquet",
    "write_dataset",
    "topic_name",
    "INTERACTIONS_SCHEMA",
    "ITEMS_SCHEMA",
    "STREAM_SCHEMA",
]

#: Share of the catalogue (top items by popularity) that autoplay / trending jumps land on.
AUTOPLAY_POOL_FRACTION = 0.02
#: The autoplay pool holds at least this many items (or the whole catalogue if smaller).
AUTOPLAY_POOL_MIN = 5
#: Probability that an on-topic step follows the current item's secondary topic, if it has one.
SECONDARY_WALK_RATE = 0.5
#: Words per topic vocabulary, and in the shared pool of generic (noise) words.
TOPIC_VOCABULARY_SIZE = 40
SHARED_VOCABULARY_SIZE = 300
#: Probability that an item has no description (exercises the null path).
DESCRIPTION_MISSING_RATE = 0.2
#: Noise norm per unit of ``text_noise`` in the content vectors (centroids have norm 1).
CONTENT_NOISE_SCALE = 4.0
#: Within-session gaps (seconds, inclusive) and the minimum gap between sessions.
WITHIN_SESSION_GAP = (10, 600)
MIN_SESSION_GAP_SECONDS = 2 * 3600 + 1
MEAN_EXTRA_SESSION_GAP_SECONDS = 22 * 3600
#: Users' first sessions start uniformly within this span after ``start_timestamp``.
USER_START_SPREAD_SECONDS = 28 * 24 * 3600

INTERACTIONS_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("timestamp", pa.int64()),
    ("session_id", pa.string()),
    ("weight", pa.float64()),
])
ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("description", pa.string()),
    ("tags", pa.list_(pa.string())),
    ("topics", pa.list_(pa.string())),
    ("image", pa.string()),
    ("video", pa.string()),
])
#: Schema of :func:`stream_interactions_to_parquet` output: no session id, sessionize by gap.
STREAM_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("timestamp", pa.int64()),
])

# Independent random streams (SeedSequence([seed, tag, ...])).
_ITEMS, _TEXT, _VECTORS, _SESSIONS, _STREAM = range(5)


class SyntheticConfig(BaseModel):
    """Parameters of the generative story (see ``docs/SYNTHETIC.md``)."""

    model_config = ConfigDict(extra="forbid")

    n_items: int = Field(2000, ge=1)
    n_topics: int = Field(20, ge=1)
    n_users: int = Field(1500, ge=1)
    sessions_per_user: float = Field(4.0, ge=1.0, description="mean; 1 + Poisson(mean - 1)")
    session_length: float = Field(8.0, ge=1.0, description="mean; 1 + Poisson(mean - 1)")
    popularity_exponent: float = Field(1.1, ge=0.0, description="Zipf-like power law over items")
    autoplay_rate: float = Field(
        0.25, ge=0.0, le=1.0,
        description="probability that the next engagement jumps to a globally popular item of "
                    "any topic (planted cross-topic noise)")
    trending_autoplay_rate: float | None = Field(
        None, ge=0.0, le=1.0,
        description="autoplay probability right after an autoplay-pool (trending) item; None = "
                    "autoplay_rate. Higher plants 'trending chains': popular triggers' "
                    "co-engagements are mostly cross-topic (what OPC's reweighting is for)")
    satiation: float = Field(
        0.0, ge=0.0, le=1.0,
        description="probability of leaving the topic is 1 - (1 - satiation) ** (run - 1), run "
                    "= same-primary-topic items just seen (see docs/SYNTHETIC.md)")
    text_noise: float = Field(0.5, ge=0.0, description="item vectors / text carry the topic "
                                                       "noisily")
    content_dim: int = Field(32, ge=2)
    secondary_topic_rate: float = Field(0.2, ge=0.0, le=1.0)
    start_timestamp: int = 1_600_000_000
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _enough_items(self) -> "SyntheticConfig":
        if self.n_items < self.n_topics:
            raise ValueError(f"n_items ({self.n_items}) must be >= n_topics ({self.n_topics}) "
                             "so that every topic has an item")
        return self


@dataclass
class SyntheticDataset:
    """A generated dataset and its planted truth.

    ``interactions`` and ``items`` have the columns of relrec's ingest output (without
    ``item_index``; an item's index is its row in ``items``). ``transitions`` has one row per
    consecutive pair within a session: ``user_id, session_id, position`` (of ``to_item``, >= 1),
    ``from_item, to_item`` (ids), ``from_index, to_index`` (item indices) and the planted flags
    ``is_autoplay`` (step 2a of ``docs/SYNTHETIC.md``) and ``is_satiation`` (step 2b); a pair
    with neither flag is an on-topic step.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    content_vectors: np.ndarray
    item_topic: np.ndarray
    popularity: np.ndarray
    transitions: pd.DataFrame
    item_secondary_topic: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    topic_names: list[str] = field(default_factory=list)
    topic_centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    autoplay_pool: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    config: SyntheticConfig | None = None

    @property
    def autoplay_pair_mask(self) -> np.ndarray:
        """Boolean mask over ``transitions`` rows: the planted autoplay / trending jumps."""
        return self.transitions["is_autoplay"].to_numpy(dtype=bool)

    def item_topic_sets(self) -> list[frozenset[int]]:
        """Each item's planted topics (primary and secondary) as a set of topic numbers."""
        return [frozenset(t for t in (int(p), int(s)) if t >= 0)
                for p, s in zip(self.item_topic, self.item_secondary_topic)]


def topic_name(topic: int, n_topics: int) -> str:
    """``topic_07``: the name of topic number ``topic`` (zero-padded to >= 2 digits)."""
    width = max(2, len(str(max(n_topics - 1, 0))))
    return f"topic_{topic:0{width}d}"


# --------------------------------------------------------------------------------------------
# Planted items: topics and popularity, with samplers
# --------------------------------------------------------------------------------------------


def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *tags]))


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def _draw_skipping(rng: np.random.Generator, cdf: np.ndarray, base: np.ndarray,
                   lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Positions in ``cdf`` drawn from the segment ``[base, base + 1)`` of a concatenated cdf,
    with the interval ``[lo, hi)`` (an excluded entry; empty when ``lo == hi``) cut out, so the
    other entries keep their relative probabilities. The result may point one past the
    segment (only when nothing else is left); callers clip it."""
    width = hi - lo
    x = base + rng.random(len(base)) * (1.0 - width)
    x = np.where(x >= lo, x + width, x)
    return np.searchsorted(cdf, x, side="right")


@dataclass(frozen=True)
class _Plant:
    primary: np.ndarray     # (n_items,) int64
    secondary: np.ndarray   # (n_items,) int64, -1 = none
    popularity: np.ndarray  # (n_items,) float64, sums to 1
    global_cdf: np.ndarray
    topic_order: np.ndarray     # item indices sorted by primary topic
    topic_position: np.ndarray  # inverse of topic_order
    topic_start: np.ndarray     # (n_topics + 1,) offsets into topic_order
    topic_cdf: np.ndarray       # topic + within-topic cdf, aligned with topic_order
    topic_mass_cdf: np.ndarray  # cdf over topics of their total popularity
    pool: np.ndarray            # autoplay pool (item indices, most popular first)
    pool_position: np.ndarray   # (n_items,) position in pool, -1 outside
    pool_cdf: np.ndarray

    def sample_global(self, rng: np.random.Generator, size: int) -> np.ndarray:
        index = np.searchsorted(self.global_cdf, rng.random(size), side="right")
        return np.minimum(index, len(self.global_cdf) - 1)

    def sample_pool(self, rng: np.random.Generator, exclude: np.ndarray) -> np.ndarray:
        """Pool items by popularity, never ``exclude[k]`` (unless it is the whole pool)."""
        position = self.pool_position[exclude]
        inside = position >= 0
        hi = np.where(inside, self.pool_cdf[np.maximum(position, 0)], 0.0)
        lo = np.where(position > 0, self.pool_cdf[np.maximum(position - 1, 0)], 0.0)
        lo = np.where(inside, lo, 0.0)
        index = _draw_skipping(rng, self.pool_cdf, np.zeros(len(exclude)), lo, hi)
        return self.pool[np.minimum(index, len(self.pool) - 1)]

    def sample_in_topic(self, rng: np.random.Generator, topics: np.ndarray,
                        exclude: np.ndarray) -> np.ndarray:
        """Items of primary topic ``topics[k]`` by popularity, never ``exclude[k]`` (unless it
        is the only item of the topic; ``-1`` excludes nothing)."""
        safe = np.maximum(exclude, 0)
        position = self.topic_position[safe]
        inside = (exclude >= 0) & (self.primary[safe] == topics)
        first = position == self.topic_start[self.primary[safe]]
        lo = np.where(first, self.primary[safe].astype(np.float64),
                      self.topic_cdf[np.maximum(position - 1, 0)])
        hi = self.topic_cdf[position]
        base = topics.astype(np.float64)
        lo, hi = np.where(inside, lo, base), np.where(inside, hi, base)
        index = _draw_skipping(rng, self.topic_cdf, base, lo, hi)
        index = np.clip(index, self.topic_start[topics], self.topic_start[topics + 1] - 1)
        return self.topic_order[index]

    def sample_other_topic(self, rng: np.random.Generator, exclude_topics: np.ndarray,
                           exclude: np.ndarray) -> np.ndarray:
        """Items by popularity restricted to primary topics other than ``exclude_topics[k]``
        (a topic by its total popularity, then an item within it); with a single topic, any
        item but ``exclude[k]``."""
        cdf = self.topic_mass_cdf
        hi = cdf[exclude_topics]
        lo = np.where(exclude_topics > 0, cdf[np.maximum(exclude_topics - 1, 0)], 0.0)
        topics = _draw_skipping(rng, cdf, np.zeros(len(exclude_topics)), lo, hi)
        topics = np.minimum(topics, len(cdf) - 1)
        return self.sample_in_topic(rng, topics, exclude)


def _plant_items(config: SyntheticConfig) -> _Plant:
    rng = _rng(config.seed, _ITEMS)
    n_items, n_topics = config.n_items, config.n_topics
    primary = rng.permutation(np.arange(n_items, dtype=np.int64) % n_topics)
    has_secondary = rng.random(n_items) < config.secondary_topic_rate
    offset = rng.integers(1, max(n_topics, 2), size=n_items)
    secondary = np.where(has_secondary & (n_topics > 1), (primary + offset) % n_topics, -1)
    ranks = rng.permutation(n_items)
    weights = (ranks + 1.0) ** -config.popularity_exponent
    popularity = weights / weights.sum()

    topic_order = np.argsort(primary, kind="stable")
    topic_position = np.empty(n_items, dtype=np.int64)
    topic_position[topic_order] = np.arange(n_items)
    topic_start = np.searchsorted(primary[topic_order], np.arange(n_topics + 1))
    topic_cdf = np.empty(n_items, dtype=np.float64)
    for topic in range(n_topics):
        lo, hi = topic_start[topic], topic_start[topic + 1]
        topic_cdf[lo:hi] = topic + _cdf(popularity[topic_order[lo:hi]])
    topic_mass = np.bincount(primary, weights=popularity, minlength=n_topics)

    pool_size = min(n_items, max(AUTOPLAY_POOL_MIN, math.ceil(AUTOPLAY_POOL_FRACTION * n_items)))
    pool = np.argsort(-popularity, kind="stable")[:pool_size]
    pool_position = np.full(n_items, -1, dtype=np.int64)
    pool_position[pool] = np.arange(pool_size)
    return _Plant(primary=primary, secondary=secondary.astype(np.int64), popularity=popularity,
                  global_cdf=_cdf(popularity), topic_order=topic_order,
                  topic_position=topic_position, topic_start=topic_start.astype(np.int64),
                  topic_cdf=topic_cdf, topic_mass_cdf=_cdf(topic_mass), pool=pool,
                  pool_position=pool_position, pool_cdf=_cdf(popularity[pool]))


# --------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------


def _walk(rng: np.random.Generator, plant: _Plant, lengths: np.ndarray,
          config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item matrix (n_sessions, max_len) with -1 padding, and the autoplay / satiation flags
    of each step (column t flags the step into position t)."""
    n_sessions = len(lengths)
    max_len = int(lengths.max()) if n_sessions else 0
    items = np.full((n_sessions, max_len), -1, dtype=np.int64)
    autoplay = np.zeros((n_sessions, max_len), dtype=bool)
    satiated = np.zeros((n_sessions, max_len), dtype=bool)
    if not n_sessions:
        return items, autoplay, satiated
    items[:, 0] = plant.sample_global(rng, n_sessions)
    run = np.ones(n_sessions, dtype=np.int64)
    for step in range(1, max_len):
        active = np.flatnonzero(lengths > step)
        if not active.size:
            break
        current = items[active, step - 1]
        size = active.size
        rate = config.autoplay_rate
        if config.trending_autoplay_rate is not None:
            rate = np.where(plant.pool_position[current] >= 0, config.trending_autoplay_rate,
                            config.autoplay_rate)
        is_auto = rng.random(size) < rate
        use_secondary = (plant.secondary[current] >= 0) & (rng.random(size) < SECONDARY_WALK_RATE)
        walk_topic = np.where(use_secondary, plant.secondary[current], plant.primary[current])
        if config.satiation > 0:
            stay = (1.0 - config.satiation) ** (run[active] - 1)
            is_sat = ~is_auto & (rng.random(size) >= stay)
        else:
            is_sat = np.zeros(size, dtype=bool)
        nxt = np.empty(size, dtype=np.int64)

        rows = np.flatnonzero(is_auto)  # 2a: autoplay pool, not the current item
        nxt[rows] = plant.sample_pool(rng, current[rows])
        rows = np.flatnonzero(is_sat)  # 2b: any item of another primary topic
        nxt[rows] = plant.sample_other_topic(rng, plant.primary[current[rows]], current[rows])
        rows = np.flatnonzero(~is_auto & ~is_sat)  # 2c: on-topic, not the current item
        nxt[rows] = plant.sample_in_topic(rng, walk_topic[rows], current[rows])
        items[active, step] = nxt
        autoplay[active, step] = is_auto
        satiated[active, step] = is_sat
        same = plant.primary[nxt] == plant.primary[current]
        run[active] = np.where(same, run[active] + 1, 1)
    return items, autoplay, satiated


@dataclass
class _Log:
    user: np.ndarray          # per row: user number (0-based within the simulation)
    session: np.ndarray       # per row: session number within the user
    item: np.ndarray          # per row: item index
    timestamp: np.ndarray     # per row: int64
    items: np.ndarray         # walk matrix
    autoplay: np.ndarray
    satiated: np.ndarray
    session_user: np.ndarray
    session_number: np.ndarray
    lengths: np.ndarray


def _simulate(rng: np.random.Generator, plant: _Plant, config: SyntheticConfig,
              n_users: int) -> _Log:
    sessions_per_user = 1 + rng.poisson(config.sessions_per_user - 1.0, size=n_users)
    n_sessions = int(sessions_per_user.sum())
    session_user = np.repeat(np.arange(n_users, dtype=np.int64), sessions_per_user)
    first_session = np.cumsum(sessions_per_user) - sessions_per_user
    session_number = np.arange(n_sessions, dtype=np.int64) - np.repeat(first_session,
                                                                      sessions_per_user)
    lengths = 1 + rng.poisson(config.session_length - 1.0, size=n_sessions)

    items, autoplay, satiated = _walk(rng, plant, lengths, config)
    filled = np.arange(items.shape[1])[None, :] < lengths[:, None]

    row_session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    n_rows = len(row_session)
    session_first_row = np.cumsum(lengths) - lengths
    position = np.arange(n_rows, dtype=np.int64) - session_first_row[row_session]
    low, high = WITHIN_SESSION_GAP
    gaps = rng.integers(low, high + 1, size=n_rows, dtype=np.int64)
    session_gaps = MIN_SESSION_GAP_SECONDS + np.floor(
        rng.exponential(MEAN_EXTRA_SESSION_GAP_SECONDS, size=n_sessions)).astype(np.int64)
    gaps[position == 0] = session_gaps[row_session[position == 0]]
    row_user = session_user[row_session]
    user_first_row = session_first_row[first_session]
    gaps[user_first_row] = 0
    elapsed = np.cumsum(gaps)
    user_start = config.start_timestamp + rng.integers(
        0, USER_START_SPREAD_SECONDS, size=n_users, dtype=np.int64)
    timestamp = user_start[row_user] + elapsed - elapsed[user_first_row][row_user]
    return _Log(user=row_user, session=session_number[row_session], item=items[filled],
                timestamp=timestamp.astype(np.int64), items=items, autoplay=autoplay,
                satiated=satiated, session_user=session_user, session_number=session_number,
                lengths=lengths)


# --------------------------------------------------------------------------------------------
# Item text and content vectors
# --------------------------------------------------------------------------------------------

_CONSONANTS = np.array(list("bdfghklmnprstvz"))
_VOWELS = np.array(list("aeiou"))


def _make_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct pronounceable made-up words (2-3 consonant-vowel syllables)."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        batch = max(16, 2 * (count - len(words)))
        consonants = _CONSONANTS[rng.integers(0, len(_CONSONANTS), size=(batch, 3))]
        vowels = _VOWELS[rng.integers(0, len(_VOWELS), size=(batch, 3))]
        n_syllables = rng.integers(2, 4, size=batch)
        for c, v, n in zip(consonants, vowels, n_syllables):
            word = "".join(c[k] + v[k] for k in range(n))
            if word not in seen and "topic" not in word:
                seen.add(word)
                words.append(word)
                if len(words) == count:
                    break
    return words


def _word_slots(rng: np.random.Generator, plant: _Plant, owner: np.ndarray, text_noise: float,
                vocabulary: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """One word for each slot; ``owner[s]`` is the item the slot belongs to."""
    size = len(owner)
    n_topics, vocabulary_size = vocabulary.shape
    topical = rng.random(size) >= text_noise
    secondary = plant.secondary[owner]
    use_secondary = (secondary >= 0) & (rng.random(size) < 0.3)
    own_topic = np.where(use_secondary, secondary, plant.primary[owner])
    noise_from_topic = rng.random(size) < 0.5
    random_topic = rng.integers(0, n_topics, size=size)
    word_in_topic = rng.integers(0, vocabulary_size, size=size)
    shared_word = rng.integers(0, len(shared), size=size)
    topic = np.where(topical, own_topic, random_topic)
    from_vocabulary = topical | noise_from_topic
    return np.where(from_vocabulary, vocabulary[topic, word_in_topic], shared[shared_word])


def _split_by_owner(words: np.ndarray, counts: np.ndarray) -> list[list[str]]:
    ends = np.cumsum(counts)
    return [words[end - n:end].tolist() for end, n in zip(ends, counts)]


def _make_items(config: SyntheticConfig, plant: _Plant, names: list[str]) -> pd.DataFrame:
    rng = _rng(config.seed, _TEXT)
    n_items, n_topics = config.n_items, config.n_topics
    words = _make_words(rng, n_topics * TOPIC_VOCABULARY_SIZE + SHARED_VOCABULARY_SIZE)
    vocabulary = np.array(words[:n_topics * TOPIC_VOCABULARY_SIZE], dtype=object).reshape(
        n_topics, TOPIC_VOCABULARY_SIZE)
    shared = np.array(words[n_topics * TOPIC_VOCABULARY_SIZE:], dtype=object)
    item_numbers = np.arange(n_items)

    def words_for(counts: np.ndarray) -> list[list[str]]:
        owner = np.repeat(item_numbers, counts)
        slots = _word_slots(rng, plant, owner, config.text_noise, vocabulary, shared)
        return _split_by_owner(slots, counts)

    title_words = words_for(rng.integers(3, 7, size=n_items))
    description_words = words_for(rng.integers(8, 17, size=n_items))
    has_description = rng.random(n_items) >= DESCRIPTION_MISSING_RATE
    tag_words = words_for(rng.integers(0, 4, size=n_items))

    titles = [" ".join(w.capitalize() for w in ws) for ws in title_words]
    descriptions = [(" ".join(ws).capitalize() + ".") if keep else None
                    for ws, keep in zip(description_words, has_description)]
    tags = [list(dict.fromkeys(ws)) for ws in tag_words]
    topics = [[names[p]] + ([names[s]] if s >= 0 else [])
              for p, s in zip(plant.primary.tolist(), plant.secondary.tolist())]
    return pd.DataFrame({
        "item_id": pd.Series([f"i{i}" for i in range(n_items)]).astype(str),
        "title": pd.Series(titles).astype(str),
        "description": pd.Series(descriptions, dtype=object),
        "tags": pd.Series(tags, dtype=object),
        "topics": pd.Series(topics, dtype=object),
        "image": pd.Series([None] * n_items, dtype=object),
        "video": pd.Series([None] * n_items, dtype=object),
    })


def _content_vectors(config: SyntheticConfig, plant: _Plant) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng(config.seed, _VECTORS)
    dim = config.content_dim
    centroids = rng.normal(size=(config.n_topics, dim))
    centroids = l2_normalize(centroids)
    base = centroids[plant.primary].copy()
    has_secondary = plant.secondary >= 0
    base[has_secondary] += 0.5 * centroids[plant.secondary[has_secondary]]
    noise = rng.normal(size=(config.n_items, dim)) * (
        config.text_noise * CONTENT_NOISE_SCALE / math.sqrt(dim))
    vectors = l2_normalize(base + noise)
    return vectors.astype(np.float32), centroids.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _resolve(config: SyntheticConfig | None, overrides: dict) -> SyntheticConfig:
    if config is None:
        return SyntheticConfig(**overrides)
    if overrides:
        return SyntheticConfig.model_validate({**config.model_dump(), **overrides})
    return config


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers, pa.int64()),
                                                       pa.string()), "")


def generate(config: SyntheticConfig | None = None, **overrides) -> SyntheticDataset:
    """Generate a dataset with planted topics, popularity, autoplay noise and satiation.

    ``overrides`` replace single fields of ``config`` (or of the defaults), e.g.
    ``generate(n_items=200, seed=3)``. The same configuration always gives the same dataset.
    """
    config = _resolve(config, overrides)
    plant = _plant_items(config)
    names = [topic_name(t, config.n_topics) for t in range(config.n_topics)]
    items = _make_items(config, plant, names)
    vectors, centroids = _content_vectors(config, plant)
    log = _simulate(_rng(config.seed, _SESSIONS), plant, config, config.n_users)

    user_ids = _prefixed("u", log.user).to_pandas().astype(str)
    session_ids = pc.binary_join_element_wise(
        _prefixed("u", log.user), _prefixed("s", log.session), "_").to_pandas()
    item_id_array = np.array([f"i{i}" for i in range(config.n_items)], dtype=object)
    interactions = pd.DataFrame({
        "user_id": user_ids,
        "item_id": pd.Series(item_id_array[log.item]).astype(str),
        "timestamp": log.timestamp.astype(np.int64),
        "session_id": pd.Series(session_ids.to_numpy(dtype=object), dtype=object),
        "weight": np.ones(len(log.item), dtype=np.float64),
    })

    # transitions: step into position t (t >= 1) of every session
    step_filled = np.arange(1, log.items.shape[1])[None, :] < log.lengths[:, None]
    if log.items.shape[1] > 1:
        from_index = log.items[:, :-1][step_filled]
        to_index = log.items[:, 1:][step_filled]
        is_auto = log.autoplay[:, 1:][step_filled]
        is_sat = log.satiated[:, 1:][step_filled]
        step_session = np.nonzero(step_filled)[0]
        position = np.nonzero(step_filled)[1] + 1
    else:
        from_index = to_index = step_session = position = np.zeros(0, dtype=np.int64)
        is_auto = is_sat = np.zeros(0, dtype=bool)
    step_user = log.session_user[step_session]
    transitions = pd.DataFrame({
        "user_id": _prefixed("u", step_user).to_pandas().astype(str),
        "session_id": pd.Series(pc.binary_join_element_wise(
            _prefixed("u", step_user), _prefixed("s", log.session_number[step_session]),
            "_").to_pandas().to_numpy(dtype=object), dtype=object),
        "position": position.astype(np.int64),
        "from_item": pd.Series(item_id_array[from_index]).astype(str),
        "to_item": pd.Series(item_id_array[to_index]).astype(str),
        "from_index": from_index.astype(np.int64),
        "to_index": to_index.astype(np.int64),
        "is_autoplay": is_auto.astype(bool),
        "is_satiation": is_sat.astype(bool),
    })
    return SyntheticDataset(
        interactions=interactions, items=items, content_vectors=vectors,
        item_topic=plant.primary.copy(), popularity=plant.popularity.copy(),
        transitions=transitions, item_secondary_topic=plant.secondary.copy(),
        topic_names=names, topic_centroids=centroids, autoplay_pool=plant.pool.copy(),
        config=config)


def stream_interactions_to_parquet(path, n_interactions: int,
                                   config: SyntheticConfig | None = None,
                                   chunk_size: int = 1_000_000) -> dict:
    """Write a synthetic interaction log of exactly ``n_interactions`` rows to Parquet.

    The log follows the generative story of :func:`generate` (same items, topics and
    popularity for the same config) but is built ``chunk_size`` rows at a time and written as
    one row group per chunk with :class:`pyarrow.parquet.ParquetWriter`, so memory stays
    bounded by the chunk (1M, 10M or 100M rows all work). Columns: ``user_id`` (``"u{n}"``),
    ``item_id`` (``"i{index}"``), ``timestamp`` (int64) — no session id: timestamps increase per
    user, 10–600 s apart within a session and more than 2 h apart between sessions, so
    sessionizing with a 30-minute gap recovers the sessions. Users never span chunks (the last
    user of a chunk may be cut short); ``config.n_users`` is ignored — users are created until
    the row count is reached. The file is written atomically (temporary file, then rename).

    Returns ``{"rows", "bytes", "n_items", "n_users", "chunks"}``.
    """
    config = config or SyntheticConfig()
    if n_interactions < 0:
        raise ValueError("n_interactions must be >= 0")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    path = Path(path)
    plant = _plant_items(config)
    item_ids = pa.array([f"i{i}" for i in range(config.n_items)], pa.string())
    rows_per_user = config.sessions_per_user * config.session_length
    written = users = chunks = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, STREAM_SCHEMA) as writer:
            while written < n_interactions:
                need = min(chunk_size, n_interactions - written)
                n_users = math.ceil(need / rows_per_user * 1.2) + 10
                attempt = 0
                while True:
                    log = _simulate(_rng(config.seed, _STREAM, chunks, attempt), plant, config,
                                    n_users)
                    if len(log.item) >= need:
                        break
                    attempt += 1
                    n_users *= 2
                used_users = int(log.user[need - 1]) + 1
                table = pa.table({
                    "user_id": _prefixed("u", log.user[:need] + users),
                    "item_id": item_ids.take(pa.array(log.item[:need])),
                    "timestamp": pa.array(log.timestamp[:need], pa.int64()),
                }, schema=STREAM_SCHEMA)
                writer.write_table(table, row_group_size=need)
                del log, table
                written += need
                users += used_users
                chunks += 1
    return {"rows": written, "bytes": path.stat().st_size, "n_items": config.n_items,
            "n_users": users, "chunks": chunks}


def write_dataset(dataset: SyntheticDataset, directory) -> dict[str, Path]:
    """Write ``interactions.parquet`` and ``items.parquet`` (lists as real list columns) into
    ``directory`` (created if needed), each atomically; returns ``{"interactions", "items"}``
    paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"interactions": directory / "interactions.parquet",
             "items": directory / "items.parquet"}
    tables = {
        "interactions": pa.Table.from_pandas(
            dataset.interactions[INTERACTIONS_SCHEMA.names], schema=INTERACTIONS_SCHEMA,
            preserve_index=False),
        "items": pa.Table.from_pandas(
            dataset.items[ITEMS_SCHEMA.names], schema=ITEMS_SCHEMA, preserve_index=False),
    }
    for name, table in tables.items():
        with atomic_path(paths[name]) as tmp:
            pq.write_table(table.replace_schema_metadata(None), tmp)
    return paths
