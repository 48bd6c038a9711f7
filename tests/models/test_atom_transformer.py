from __future__ import annotations

import pytest
import torch

from crysgen.models.atom_transformer import AtomTransformer, lattice_matrix

TINY = {"type_dim": 39, "d_model": 32, "n_layers": 2, "n_heads": 4, "edge_hidden": 16}
BOTH = pytest.mark.parametrize("messages", [False, True, "head"],
                               ids=["attention", "pair-messages", "displacement-head"])


def _net_and_batch(seed: int = 0, messages: bool | str = False):
    torch.manual_seed(seed)
    net = AtomTransformer(**TINY, pair_messages=bool(messages), displacement_head=messages == "head")
    for p in net.parameters():  # adaLN-Zero starts at zero output: make every path matter
        torch.nn.init.normal_(p, std=0.2)
    b, s = 3, 6
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    x = (torch.randn(b, s, 39), torch.rand(b, s, 3), torch.randn(b, 6), mask, torch.randn(b),
         torch.tensor([False, True, False]),
         lattice_matrix(torch.tensor([[4.0, 5, 6, 1.5, 1.6, 1.7]]).repeat(b, 1)))
    return net.eval(), x


@BOTH
def test_permuting_sites_permutes_outputs(messages):
    net, (t, f, lat, m, c, g, cell) = _net_and_batch(messages=messages)
    perm = torch.tensor([2, 0, 3, 1, 4, 5])  # the real sites of crystal 0 and 1 are shuffled
    out = net(t, f, lat, m, c, g, cell)
    outp = net(t[:, perm], f[:, perm], lat, m[:, perm], c, g, cell)
    torch.testing.assert_close(outp[0][:2], out[0][:2, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outp[1][:2], out[1][:2, perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outp[2], out[2], atol=1e-5, rtol=1e-4)  # lattice token: invariant


@BOTH
def test_padding_sites_never_reach_real_ones(messages):
    net, (t, f, lat, m, c, g, cell) = _net_and_batch(messages=messages)
    out = net(t, f, lat, m, c, g, cell)
    t2, f2 = t.clone(), f.clone()
    t2[~m] = 100 * torch.randn(int((~m).sum()), 39)
    f2[~m] = torch.rand(int((~m).sum()), 3)
    out2 = net(t2, f2, lat, m, c, g, cell)
    for a, b in zip(out, out2, strict=False):
        if a.dim() == 3:
            torch.testing.assert_close(a[m], b[m])
        else:
            torch.testing.assert_close(a, b)


def test_pair_bias_is_invariant_to_a_common_shift_but_not_to_moving_one_atom():
    net, (_t, f, _lat, m, _c, _g, cell) = _net_and_batch()

    def bias_of(frac):
        return net.pair_bias(net.pair_features(net.pair_differences(frac), cell), m)

    bias = bias_of(f)
    shifted = torch.remainder(f + torch.tensor([0.37, 0.81, 0.05]), 1.0)
    torch.testing.assert_close(bias_of(shifted), bias, atol=1e-4, rtol=1e-4)
    moved = f.clone()
    moved[0, 0] += 0.2
    assert not torch.allclose(bias_of(moved)[0], bias[0], atol=1e-3)


def test_pair_messages_start_silent_and_carry_where_neighbours_lie():
    net, (t, f, lat, m, c, g, cell) = _net_and_batch()
    torch.manual_seed(1)
    messaged = AtomTransformer(**TINY, pair_messages=True).eval()
    missing, unexpected = messaged.load_state_dict(net.state_dict(), strict=False)
    assert missing and all(".msg." in k for k in missing) and not unexpected
    for a, b in zip(net(t, f, lat, m, c, g, cell), messaged(t, f, lat, m, c, g, cell), strict=True):
        torch.testing.assert_close(a, b)  # zero-initialised output: switching it on changes nothing
    for block in messaged.blocks:
        torch.nn.init.normal_(block.msg.out.weight, std=0.5)
    # move atom 1 of crystal 1; with attention biases cut off, only messages tell atom 0 of it
    for block in (*net.blocks, *messaged.blocks):
        block.qkv.weight.data.zero_()
        block.qkv.bias.data.zero_()
    net.edge[-1].weight.data.zero_()
    net.edge[-1].bias.data.zero_()
    messaged.edge[-1].weight.data.zero_()
    messaged.edge[-1].bias.data.zero_()
    moved = f.clone()
    moved[1, 1] += torch.tensor([0.1, 0.0, 0.0])
    plain = [net(t, x, lat, m, c, g, cell)[1][1, 0] for x in (f, moved)]
    told = [messaged(t, x, lat, m, c, g, cell)[1][1, 0] for x in (f, moved)]
    torch.testing.assert_close(plain[0], plain[1])  # attention with uniform weights: blind to it
    assert not torch.allclose(told[0], told[1], atol=1e-4)


def test_the_displacement_head_starts_silent_and_sums_periodic_differences():
    net, (t, f, lat, m, c, g, cell) = _net_and_batch()
    headed = AtomTransformer(**TINY, displacement_head=True, head_width=8).eval()
    missing, unexpected = headed.load_state_dict(net.state_dict(), strict=False)
    assert missing and all(k.startswith("displace.") for k in missing) and not unexpected
    for a, b in zip(net(t, f, lat, m, c, g, cell), headed(t, f, lat, m, c, g, cell), strict=True):
        torch.testing.assert_close(a, b)  # zero-initialised output: switching it on changes nothing
    # every pair weight 1: each real atom moves by the mean of its periodic differences to the others
    with torch.no_grad():
        headed.displace.out.bias.fill_(1.0)
    f = f.double().clone()
    f[1, 0], f[1, 1] = torch.tensor([0.95, 0.5, 0.02]), torch.tensor([0.05, 0.5, 0.98])  # across the edge
    f = f.float()
    want = torch.zeros_like(f)
    for b in range(len(f)):
        real = torch.nonzero(m[b]).flatten()
        for i in real:
            d = f[b, real] - f[b, i]
            want[b, i] = (d - torch.round(d)).sum(0) / len(real)
    gains = torch.tensor([1.0, 3.0, 0.5])
    with torch.no_grad():
        base = net(t, f, lat, m, c, g, cell)[1]
        got = headed(t, f, lat, m, c, g, cell, coord_gain=gains)[1]
    torch.testing.assert_close((got - base)[m], (gains[:, None, None] * want)[m], atol=1e-5, rtol=1e-5)


def test_lattice_matrix_has_pymatgens_metric():
    from pymatgen.core import Lattice

    params = [3.1, 4.2, 5.3, 80.0, 95.0, 110.0]
    want = Lattice.from_parameters(*params).metric_tensor  # orientation-free: distances agree
    got = lattice_matrix(torch.tensor([params[:3] + [p * torch.pi / 180 for p in params[3:]]],
                                      dtype=torch.float64))[0]
    torch.testing.assert_close(got @ got.T, torch.tensor(want), atol=1e-9, rtol=1e-9)


def test_the_element_count_embedding_starts_silent_and_is_wired():
    net, (t, f, lat, m, c, g, cell) = _net_and_batch()
    torch.manual_seed(1)
    counted = AtomTransformer(**TINY, num_elements=True).eval()
    missing, unexpected = counted.load_state_dict(net.state_dict(), strict=False)
    assert missing == ["num_elements.weight"] and not unexpected
    k = torch.tensor([2, 3, 1])
    plain, with_count = net(t, f, lat, m, c, g, cell), counted(t, f, lat, m, c, g, cell, num_elements=k)
    for a, b in zip(plain, with_count, strict=True):
        torch.testing.assert_close(a, b)  # zero-initialised: switching it on changes nothing
    torch.nn.init.normal_(counted.num_elements.weight, std=0.5)
    two, three = (counted(t, f, lat, m, c, g, cell, num_elements=torch.full((3,), v)) for v in (2, 3))
    assert not torch.allclose(two[1], three[1])  # the count reaches the outputs


def test_dropout_acts_in_training_only():
    """Dropout changes training outputs; in eval mode the network equals its dropout-free twin."""
    net, x = _net_and_batch()
    torch.manual_seed(1)
    drop = AtomTransformer(**TINY | {"dropout": 0.3})
    drop.load_state_dict(net.state_dict())  # dropout adds no weight
    drop.eval()
    for a, b in zip(drop(*x), net(*x), strict=True):
        torch.testing.assert_close(a, b)
    drop.train()
    first, second = drop(*x), drop(*x)
    assert not torch.allclose(first[2], second[2])  # the lattice output differs between two passes
    assert not torch.allclose(first[2], net(*x)[2])


def test_widened_frequencies_compute_what_the_narrow_network_did_and_then_see_more():
    from crysgen.models.atom_transformer import widen_frequencies

    narrow, (t, f, lat, m, c, g, cell) = _net_and_batch(messages="head")  # messages and head read pairs too
    wide = AtomTransformer(**(narrow.config | {"n_freqs": 11, "edge_freqs": 9})).eval()
    wide.load_state_dict(widen_frequencies(narrow.state_dict(), narrow.config, wide.config))  # strict
    for a, b in zip(narrow(t, f, lat, m, c, g, cell), wide(t, f, lat, m, c, g, cell), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    # the new columns are live inputs: giving them weight changes the outputs
    with torch.no_grad():
        wide.coord_in.weight.normal_(std=0.2)
    assert not torch.allclose(wide(t, f, lat, m, c, g, cell)[1], narrow(t, f, lat, m, c, g, cell)[1])
    with pytest.raises(ValueError, match="narrow"):
        widen_frequencies(wide.state_dict(), wide.config, narrow.config)


def test_dropped_blocks_compute_what_the_deep_network_does_with_only_those_blocks():
    """Fails when a kept block is renumbered wrongly, or when the pair-bias rows of the dropped
    blocks (edge.2, one bias per block and head) are kept instead of the kept blocks' ones."""
    from crysgen.models.atom_transformer import (
        _modulate,
        fourier,
        kept_blocks,
        resize_blocks,
        timestep_embedding,
    )

    torch.manual_seed(0)
    deep = AtomTransformer(**(TINY | {"n_layers": 5}), pair_messages=True)
    for p in deep.parameters():
        torch.nn.init.normal_(p, std=0.2)
    deep.eval()
    _, (t, f, lat, m, c, g, cell) = _net_and_batch()
    assert kept_blocks(10, 6) == [0, 2, 4, 5, 7, 9] and kept_blocks(5, 3) == [0, 2, 4]
    shallow = AtomTransformer(**(deep.config | {"n_layers": 3})).eval()
    shallow.load_state_dict(resize_blocks(deep.state_dict(), deep.config, shallow.config))  # strict
    # the deep network run through blocks 0, 2 and 4 only, each with its own pair-bias heads
    c_ = deep.cfg
    atoms = deep.type_in(t) + deep.coord_in(fourier(f, c_.n_freqs))
    x = torch.cat([(deep.lattice_in(lat) + deep.lattice_token)[:, None], atoms], 1)
    cond = deep.time(timestep_embedding(c, c_.d_model)) + deep.given(g.long())
    feats = deep.pair_features(deep.pair_differences(f), cell)
    bias = deep.pair_bias(feats, m).view(len(t), 5, c_.n_heads, t.shape[1] + 1, t.shape[1] + 1)
    for i in (0, 2, 4):
        x = deep.blocks[i](x, cond, bias[:, i], feats, m)
    shift, scale = deep.ada_out(cond).chunk(2, -1)
    x = _modulate(deep.norm_out(x), shift, scale)
    with torch.no_grad():
        types, coords, lattice = shallow(t, f, lat, m, c, g, cell)
        torch.testing.assert_close(types, deep.type_out(x[:, 1:]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(coords, deep.coord_out(x[:, 1:]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(lattice, deep.lattice_out(x[:, 0]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="initial weights"):
        resize_blocks(shallow.state_dict(), shallow.config, deep.config)


@pytest.mark.parametrize("messages", [False, True], ids=["attention", "pair-messages"])
def test_a_grown_network_computes_what_the_trained_one_did_and_then_trains_its_new_blocks(messages):
    """Fails when an old block lands out of order or its pair-bias rows (edge.2) are not moved with
    it, when a new block is not the identity at the start, or when the new blocks get no gradient."""
    from crysgen.models.atom_transformer import kept_blocks, resize_blocks

    torch.manual_seed(0)
    old = AtomTransformer(**(TINY | {"n_layers": 3}), pair_messages=messages)
    for p in old.parameters():  # a "trained" network: every gate and read-out away from zero
        torch.nn.init.normal_(p, std=0.2)
    old.eval()
    _, (t, f, lat, m, c, g, cell) = _net_and_batch()
    deep = AtomTransformer(**(old.config | {"n_layers": 7}))
    assert kept_blocks(7, 3) == [0, 3, 6]
    deep.load_state_dict(resize_blocks(old.state_dict(), old.config, deep.config,
                                       fresh=deep.state_dict()))  # strict
    deep.eval()
    with torch.no_grad():
        for a, b in zip(old(t, f, lat, m, c, g, cell), deep(t, f, lat, m, c, g, cell), strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(deep.blocks[3].qkv.weight, old.blocks[1].qkv.weight)
    deep.train()
    sum(o.square().sum() for o in deep(t, f, lat, m, c, g, cell)).backward()
    assert deep.blocks[1].ada[1].weight.grad.abs().sum() > 0  # a new block learns from the first step


@pytest.mark.parametrize("messages", [False, True], ids=["attention", "pair-messages"])
def test_the_site_count_embedding_starts_silent_and_reads_the_real_sites(messages):
    net, (t, f, lat, m, c, g, cell) = _net_and_batch(messages=messages)
    torch.manual_seed(1)
    counted = AtomTransformer(**TINY, pair_messages=messages, num_sites=True).eval()
    missing, unexpected = counted.load_state_dict(net.state_dict(), strict=False)
    assert missing == ["num_sites.weight"] and not unexpected
    plain = net(t, f, lat, m, c, g, cell)
    for a, b in zip(counted(t, f, lat, m, c, g, cell), plain, strict=True):
        torch.testing.assert_close(a, b)  # zero-initialised: switching it on changes nothing
    torch.nn.init.normal_(counted.num_sites.weight, std=0.5)
    with torch.no_grad():  # rows other than the batch's counts (4, 6, 2) stay silent
        keep = torch.zeros(len(counted.num_sites.weight), dtype=torch.bool)
        keep[[2, 4, 6]] = True
        counted.num_sites.weight[~keep] = 0
    out = counted(t, f, lat, m, c, g, cell)
    for a, b in zip(out, plain, strict=True):
        assert not torch.allclose(a, b, atol=1e-3)  # the count reaches every output
    wide = torch.cat([t, torch.randn(3, 4, 39)], 1), torch.cat([f, torch.rand(3, 4, 3)], 1)
    out_wide = counted(*wide, lat, torch.cat([m, torch.zeros(3, 4, dtype=torch.bool)], 1), c, g, cell)
    for a, b in zip(out_wide, out, strict=True):  # counted from the mask, not the padded width
        torch.testing.assert_close(a[:, :6] if a.dim() == 3 else a, b, atol=1e-5, rtol=1e-4)
