"""The service's content path for a new item equals the tower's own cold-item embedding."""

from types import SimpleNamespace

import numpy as np
import torch

from relrec.model.tower import ItemTower, TowerConfig
from relrec.serve.engine import ServedModel


def test_tower_embedding_of_new_text_matches_the_tower_on_a_cold_item():
    torch.manual_seed(0)
    tower = ItemTower(TowerConfig(n_items=5, text_dim=8, visual_dim=4, id_dim=6,
                                  embedding_dim=4, hidden_dims=[16], heads=["main", "other"]))
    text = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    tower.set_content("text", text, np.ones(5, bool))
    tower.set_content("visual", np.zeros((5, 4), np.float32), np.zeros(5, bool))
    tower.eval()
    for head in ("main", "other"):
        fake = SimpleNamespace(tower=tower, main_head=head)
        mine = ServedModel.tower_embedding(fake, text[3])
        with torch.no_grad():
            reference = tower(torch.tensor([3]), head=head, known=torch.tensor([False]))[0].numpy()
        np.testing.assert_allclose(mine, reference, atol=1e-6)
