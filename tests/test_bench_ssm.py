"""`python -m mbrl.bench ssm`: the analytic FLOP count of the Mamba-2 core is what torch counts."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mbrl.bench.ssm import build_core, core_flops


@pytest.mark.parametrize("T,chunk", [(12, 4), (10, 4), (5, 8)])  # whole chunks, a padded last chunk, one short chunk
def test_core_flop_formula_matches_counter(T, chunk):
    model = build_core("XS", d_model=32, n_layer=2, d_state=4, headdim=8, chunk=chunk)
    B, D = 3, model.d_model
    x = torch.randn(B, T, D)
    seg = torch.zeros(B, T, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.core(x, seg, model._unpack(model.initial(B)))
    assert fc.get_total_flops() == core_flops(B, T, D, 2, 4, expand=2, headdim=8, chunk=chunk)
