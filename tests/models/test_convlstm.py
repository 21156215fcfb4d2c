"""ConvLSTMCell against the LSTM equations by hand; RecurrentEventUNet's state handling."""

from __future__ import annotations

import math

import pytest
import torch

from vision.errors import DataError
from vision.models.events import ConvLSTMCell, RecurrentEventUNet

GATE_I, GATE_F, GATE_O, GATE_G = 0, 1, 2, 3  # rows of the gate convolution
FROM_X, FROM_H = 0, 1  # its input columns: [x, h]



def hand_cell() -> ConvLSTMCell:
    """1 -> 1 channel, 1x1 kernel: i = sigmoid(x), f = 0.75, o = sigmoid(h), g = 0.6."""
    cell = ConvLSTMCell(input_dim=1, hidden_dim=1, kernel_size=1)
    with torch.no_grad():
        cell.gates.weight.zero_()
        cell.gates.bias.zero_()
        cell.gates.weight[GATE_I, FROM_X] = 1.0
        cell.gates.bias[GATE_F] = math.log(3)  # sigmoid(ln 3) = 3 / 4
        cell.gates.weight[GATE_O, FROM_H] = 1.0
        cell.gates.bias[GATE_G] = math.atanh(0.6)
    return cell


def test_cell_follows_the_lstm_equations_by_hand():
    cell = hand_cell()
    ln3 = math.log(3)
    x = torch.tensor([[[[ln3, 0.0]]]])  # (B=1, C=1, H=1, W=2): i = 0.75 and 0.5
    h0, c0 = torch.zeros(1, 1, 1, 2), torch.full((1, 1, 1, 2), 2.0)
    h1, c1 = cell(x, (h0, c0))
    # c1 = f * c0 + i * g = 0.75 * 2 + 0.75 * 0.6 = 1.95 (left), 0.75 * 2 + 0.5 * 0.6 = 1.8 (right); o = sigmoid(0)
    torch.testing.assert_close(c1, torch.tensor([[[[1.95, 1.8]]]]))
    torch.testing.assert_close(h1, 0.5 * torch.tanh(torch.tensor([[[[1.95, 1.8]]]])))
    # step 2 with x = 0: i = 0.5, o = sigmoid(h1); c2 = 0.75 * c1 + 0.5 * 0.6
    h2, c2 = cell(torch.zeros_like(x), (h1, c1))
    torch.testing.assert_close(c2, torch.tensor([[[[1.7625, 1.65]]]]))
    torch.testing.assert_close(h2, torch.sigmoid(h1) * torch.tanh(c2))


def test_no_state_means_zero_state():
    cell = hand_cell()
    x = torch.tensor([[[[math.log(3)]]]])
    h, c = cell(x)
    torch.testing.assert_close(c, torch.tensor([[[[0.45]]]]))  # 0.75 * 0 + 0.75 * 0.6
    torch.testing.assert_close(h, 0.5 * torch.tanh(c))
    torch.testing.assert_close(cell(x, cell.zero_state(x))[1], c)


def test_gate_convolution_reads_the_neighbour_above():
    # a 3x3 kernel whose only weight is the top-centre tap of g: g at (y, x) sees the input at (y - 1, x)
    cell = ConvLSTMCell(input_dim=1, hidden_dim=1, kernel_size=3)
    with torch.no_grad():
        cell.gates.weight.zero_()
        cell.gates.bias.zero_()
        cell.gates.weight[GATE_G, FROM_X, 0, 1] = math.atanh(0.6)
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    _, c = cell(x)
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 2, 1] = 0.5 * 0.6  # i = sigmoid(0) = 0.5
    torch.testing.assert_close(c, expected)


def test_forget_gate_bias_starts_at_one():
    cell = ConvLSTMCell(input_dim=2, hidden_dim=3)
    assert cell.gates.weight.shape == (12, 5, 3, 3)
    assert cell.gates.bias.tolist() == [0.0] * 3 + [1.0] * 3 + [0.0] * 6


def test_lstm_width_defaults_to_half_the_bottleneck_and_can_be_set():
    assert RecurrentEventUNet(5, 3, base_channels=4, depth=2).lstm.gates.weight.shape == (32, 16 + 8, 3, 3)
    model = RecurrentEventUNet(5, 3, base_channels=4, depth=2, lstm_channels=5, lstm_kernel_size=1).eval()
    assert model.lstm.gates.weight.shape == (20, 16 + 5, 1, 1)
    with torch.no_grad():
        assert model(torch.zeros(1, 5, 8, 8), return_state=True)["state"][0].shape == (1, 5, 2, 2)


def tiny_recurrent() -> RecurrentEventUNet:
    torch.manual_seed(0)
    return RecurrentEventUNet(in_channels=2, num_classes=3, base_channels=4, depth=2).eval()


def test_one_step_with_zero_state_is_deterministic_and_same_as_a_single_voxel():
    model = tiny_recurrent()
    voxel = torch.randn(2, 2, 20, 24)
    with torch.no_grad():
        single = model(voxel)
        again = model(voxel)
        as_sequence = model(voxel[:, None])
        zero_state = model(voxel, state=model.lstm.zero_state(torch.zeros(2, 8, 5, 6)))
    assert torch.equal(single["logits"], again["logits"])
    torch.testing.assert_close(single["logits"], as_sequence["logits"])
    torch.testing.assert_close(single["features"], zero_state["features"])
    assert single["logits"].shape == (2, 3, 20, 24) and single["features"].shape == (2, 4, 20, 24)


def test_earlier_steps_change_the_prediction_for_the_last():
    model = tiny_recurrent()
    sequence = torch.randn(1, 3, 2, 20, 24)
    with torch.no_grad():
        whole = model(sequence)["logits"]
        last_alone = model(sequence[:, -1])["logits"]
    assert (whole - last_alone).abs().max() > 1e-3


def test_gradient_reaches_the_first_step_through_the_state():
    model = tiny_recurrent()
    sequence = torch.randn(1, 3, 2, 20, 24, requires_grad=True)
    model(sequence)["logits"].sum().backward()
    assert sequence.grad[:, 0].abs().sum() > 0


def test_carrying_the_state_over_two_calls_equals_one_call():
    model = tiny_recurrent()
    sequence = torch.randn(2, 3, 2, 20, 24)
    with torch.no_grad():
        whole = model(sequence, return_state=True)
        first = model(sequence[:, :2], return_state=True)
        second = model(sequence[:, 2:], state=first["state"], return_state=True)
    torch.testing.assert_close(second["logits"], whole["logits"])
    torch.testing.assert_close(second["state"][1], whole["state"][1])


def test_odd_sizes_and_the_state_shape():
    model = tiny_recurrent()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 2, 100, 130), return_state=True)
    assert out["logits"].shape == (1, 3, 100, 130) and torch.isfinite(out["logits"]).all()
    # state: 4 * 2 ** 2 / 2 = 8 channels at the padded 100 x 132 over 4
    assert [tuple(t.shape) for t in out["state"]] == [(1, 8, 25, 33)] * 2
    assert "state" not in model(torch.randn(1, 2, 8, 8))


def test_bad_inputs_and_states_raise_data_error():
    model = tiny_recurrent()
    with pytest.raises(DataError, match="^<voxel_seq>: "):
        model(torch.zeros(1, 2, 3, 2, 8, 8, 1))
    with pytest.raises(DataError, match="^<voxel_seq>: "):
        model(torch.zeros(1, 3, 5, 8, 8))
    with pytest.raises(DataError, match="^<state>: .*\\(1, 8, 2, 2\\)"):
        model(torch.zeros(1, 2, 8, 8), state=(torch.zeros(1, 8, 3, 3), torch.zeros(1, 8, 3, 3)))
    with pytest.raises(DataError, match="^ConvLSTMCell: "):
        ConvLSTMCell(4, 4, kernel_size=2)
