"""ConvLSTM (Shi et al., NeurIPS 2015) and a recurrent event U-Net built on it.

:class:`ConvLSTMCell` implements the ConvLSTM equations (paper Eq. 3) without the peephole terms
``W_c o C`` (as Keras' ConvLSTM2D and most later work do; they add parameters and rarely help):

    i_t = sigmoid(W_xi * X_t + W_hi * H_{t-1} + b_i)
    f_t = sigmoid(W_xf * X_t + W_hf * H_{t-1} + b_f)
    o_t = sigmoid(W_xo * X_t + W_ho * H_{t-1} + b_o)
    g_t = tanh(W_xg * X_t + W_hg * H_{t-1} + b_g)
    C_t = f_t o C_{t-1} + i_t o g_t
    H_t = o_t o tanh(C_t)

(``*`` convolution, ``o`` element-wise product). All four gates come from one convolution over
``cat([X_t, H_{t-1}])`` whose output channels are ordered ``i, f, o, g``.

:class:`RecurrentEventUNet` puts one ConvLSTM at the *bottleneck* of the event U-Net: the encoder runs
on every voxel grid of the sequence (all steps in one batched call), the ConvLSTM carries a state of
``(B, lstm_channels, H / 2 ** depth, W / 2 ** depth)`` across steps, and the decoder runs once, on the
last step's skip connections and the ConvLSTM's last hidden state. The bottleneck is the cheapest place
for memory (the smallest map) and where features are most semantic; skips stay per-frame, so edges come
from the current events. The state has ``lstm_channels`` channels, by default half the bottleneck's
(``base * 2 ** depth``): the gate convolution grows with the square of its width and would otherwise cost
more than the rest of the network.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from vision.errors import DataError
from vision.models.events.unet import (
    EventUNetDecoder,
    EventUNetEncoder,
    SegmentationHead,
    check_model_args,
    check_voxel,
    kaiming_init,
    pad_to_multiple,
)

State = tuple[Tensor, Tensor]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``x (B, C_in, H, W)``, ``state (h, c)`` each ``(B, C_hid, H, W)`` -> ``(h, c)``.

    ``state=None`` starts from zeros. The gate convolution's weight is ``(4 * C_hid, C_in + C_hid, k, k)``,
    output channels ordered ``i, f, o, g`` (see the module docstring for the equations).
    """

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 3, forget_bias: float = 1.0) -> None:
        super().__init__()
        if input_dim < 1 or hidden_dim < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise DataError(type(self).__name__, "input_dim and hidden_dim must be >= 1 and kernel_size odd, "
                                                 f"got {input_dim}, {hidden_dim}, {kernel_size}")
        self.input_dim, self.hidden_dim = input_dim, hidden_dim
        self.gates = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size, padding=kernel_size // 2)
        nn.init.xavier_uniform_(self.gates.weight)  # the gates are sigmoid/tanh, not ReLU
        nn.init.zeros_(self.gates.bias)
        with torch.no_grad():  # forget bias 1: remember by default early in training (Jozefowicz et al., 2015)
            self.gates.bias[hidden_dim: 2 * hidden_dim] = forget_bias

    def zero_state(self, x: Tensor) -> State:
        """Zero ``(h, c)`` matching ``x``'s batch, size, dtype and device."""
        zeros = x.new_zeros(x.shape[0], self.hidden_dim, *x.shape[-2:])
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: Optional[State] = None) -> State:
        hidden, cell = self.zero_state(x) if state is None else state
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell


class RecurrentEventUNet(nn.Module):
    """Event U-Net with a ConvLSTM at the bottleneck, for sequences of voxel grids.

    ``forward(x, state=None, return_state=False)``:

    - ``x``: ``voxel_seq (B, S, T_bins, H, W)`` (oldest step first) or one ``voxel (B, T_bins, H, W)`` (S = 1);
    - ``state``: ``(h, c)`` from an earlier call's ``out["state"]`` (each ``(B, D_b, H_b, W_b)`` with
      ``D_b = lstm_channels`` and ``H_b, W_b`` the padded size over ``2 ** depth``), or None for zeros.
      Two calls on consecutive chunks with the state carried equal one call on the whole sequence (in
      eval mode; BatchNorm's batch statistics span all steps in training); detach the state between calls
      to truncate back-propagation through time.

    Returns ``{"logits": (B, C, H, W), "features": (B, D, H, W)}`` for the *last* step (D = feature_dim =
    base_channels), plus ``"state": (h, c)`` when ``return_state``. Arguments as
    :class:`~vision.models.events.unet.EventUNet`, plus ``lstm_kernel_size`` for the gate convolution and ``lstm_channels`` for its state
    (default ``base * 2 ** depth // 2``).

    >>> model = RecurrentEventUNet(in_channels=5, num_classes=3, base_channels=4, depth=2).eval()
    >>> out = model(torch.zeros(2, 3, 5, 10, 12), return_state=True)
    >>> tuple(out["logits"].shape), tuple(out["state"][0].shape)
    ((2, 3, 10, 12), (2, 8, 3, 3))
    """

    def __init__(self, in_channels: int = 5, num_classes: int = 2, base_channels: int = 16, depth: int = 4,
                 norm: str = "batch", dropout: float = 0.0, lstm_kernel_size: int = 3,
                 lstm_channels: Optional[int] = None) -> None:
        super().__init__()
        check_model_args(type(self).__name__, in_channels, num_classes, base_channels, depth, norm, dropout)
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.feature_dim = base_channels
        self.encoder = EventUNetEncoder(in_channels, base_channels, depth, norm, dropout)
        bottleneck = self.encoder.out_channels[-1]
        hidden = max(1, bottleneck // 2) if lstm_channels is None else lstm_channels
        self.decoder = EventUNetDecoder(base_channels, depth, norm, dropout, bottleneck_channels=hidden)
        self.head = SegmentationHead(base_channels, num_classes, norm)
        kaiming_init(self)
        self.lstm = ConvLSTMCell(bottleneck, hidden, lstm_kernel_size)  # after kaiming_init: keeps its init

    def _as_sequence(self, x: Tensor) -> Tensor:
        """``(B, T_bins, H, W)`` -> ``(B, 1, T_bins, H, W)``; checks ``(B, S, T_bins, H, W)``."""
        if isinstance(x, Tensor) and x.ndim == 4:
            x = x.unsqueeze(1)
        if not isinstance(x, Tensor) or x.ndim != 5 or x.shape[1] < 1:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError("<voxel_seq>", f"expected (B, S, {self.in_channels}, H, W) or "
                                           f"(B, {self.in_channels}, H, W), got {shape}")
        check_voxel(x[:, 0], self.in_channels, "<voxel_seq>")
        return x

    @staticmethod
    def _check_state(state: State, expected: tuple[int, ...]) -> None:
        shapes = ([tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in state]
                  if isinstance(state, (tuple, list)) else type(state).__name__)
        if shapes != [expected, expected]:
            raise DataError("<state>", f"expected (h, c) each of shape {expected}, got {shapes}; "
                                       "pass the state of a call with the same batch and image size")

    def forward(self, x: Tensor, state: Optional[State] = None, return_state: bool = False) -> dict:
        """See the class docstring; ``x: (B, S, T_bins, H, W) | (B, T_bins, H, W)``."""
        x = self._as_sequence(x)
        batch, steps = x.shape[:2]
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x.flatten(0, 1), 2**self.depth)  # (B * S, T_bins, H', W'): one encoder call
        levels = [level.unflatten(0, (batch, steps)) for level in self.encoder(padded)]
        if state is not None:
            self._check_state(state, (batch, self.lstm.hidden_dim, *levels[-1].shape[-2:]))
        for step in range(steps):
            state = self.lstm(levels[-1][:, step], state)
        features = self.decoder([level[:, -1] for level in levels[:-1]] + [state[0]])
        features = features[..., :height, :width]  # drop the padding (see EventUNet)
        out = {"logits": self.head(features), "features": features}
        if return_state:
            out["state"] = state
        return out
