"""The siamese network: a shared-weight branch (encoder + head) that scores one image.

The siamese form is two copies of :class:`QualityBranch` with tied weights; the
probability that copy A got the larger magnitude is ``sigmoid(s(A) - s(B))``. Training
runs the one branch over grouped batches (several magnitudes of one image in one forward
pass) and compares the scores pairwise (``training.ranking_loss``); scoring runs it once.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Fixed normalisation (no per-image statistics): absolute brightness must stay visible
_SMALL_CNN_MEAN, _SMALL_CNN_STD = (0.45, 0.45, 0.45), (0.25, 0.25, 0.25)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The fixed front ends read raw 0-255 levels
_RAW_MEAN, _RAW_STD = (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small CNN trained from scratch; sees every pixel in its first (strided) layer.

    The last feature maps are pooled four ways: mean and standard deviation over the
    image, and their logarithms. The spread of a response (e.g. of edge energy) is
    itself a quality cue, and log-pooled features let a linear head form *ratios*
    of energies, which do not depend on how much texture an image happens to have.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(3, w, stride=2),
            _conv_bn_relu(w, w),
            _conv_bn_relu(w, 2 * w, stride=2),
            _conv_bn_relu(2 * w, 2 * w),
            _conv_bn_relu(2 * w, 4 * w, stride=2),
            _conv_bn_relu(4 * w, 4 * w),
        )
        self.out_features = 16 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.training:
            flat = f.flatten(2)
            mean, std = flat.mean(dim=2), flat.std(dim=2)
        else:
            # the same values by a two-pass sum over (N, H * W, C), along channels-last
            # memory: ~6x faster than torch.std, which took a seventh of scoring time
            f = f.permute(0, 2, 3, 1).flatten(1, 2)
            centre = f.mean(dim=1, keepdim=True)
            mean = centre.squeeze(1)
            std = ((f - centre).square().sum(dim=1) / (f.shape[1] - 1)).sqrt()
        # eps 1e-2: larger than typical for log pooling; with 1e-3 sparse features
        # gave huge gradients and training stalled on JPEG
        return torch.cat([mean, std, torch.log(mean + 1e-2), torch.log(std + 1e-2)], dim=1)


class PixelGridNet(nn.Module):
    """Pixelation scorer's front end: how often neighbours are equal, beyond the photo's own.

    Nearest-neighbour upscaling repeats each pixel ``b`` times, so in a pixelated patch
    pixels ``k`` apart are equal with probability about ``1 - k / b``, and the block
    borders sit in the same columns in every row. A photo's own flat regions make
    pixels equal at every distance alike. The front end gives, for two tolerances (0.5
    and 2.5 levels, largest channel difference), the share of equal pairs at lags 1, 2,
    3, 4, 6 and 8 minus the share at lag 12 (the photo's own), that lag-12 share, and
    how unevenly lag-1 equality falls over columns and rows (block borders). The head
    learns the block size from them. A CNN trained from scratch on 30 photos reads
    blocks of 1.5-2 px as none (benchmarks/RESULTS.md).
    """

    LAGS = (1, 2, 3, 4, 6, 8)
    FAR_LAG = 12
    TOLERANCES = (0.5, 2.5)  # levels on 0-255

    def __init__(self):
        super().__init__()
        self.out_features = len(self.TOLERANCES) * (len(self.LAGS) + 2)

    @staticmethod
    def _differences(levels: torch.Tensor, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
        across = (levels[..., lag:] - levels[..., :-lag]).abs().amax(dim=1)
        down = (levels[..., lag:, :] - levels[..., :-lag, :]).abs().amax(dim=1)
        return across, down

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) levels 0-255 -> (N, 16) features."""
        lags = (*self.LAGS, self.FAR_LAG)
        # whole levels, so int16 gives the same comparisons as float at half the memory
        # traffic (the differences were half of this reader's time)
        levels = x.to(torch.int16)
        differences = {lag: self._differences(levels, lag) for lag in lags}
        features = []
        for tolerance in self.TOLERANCES:
            shares = {
                lag: (
                    (across <= tolerance).float().mean((1, 2))
                    + (down <= tolerance).float().mean((1, 2))
                )
                / 2
                for lag, (across, down) in differences.items()
            }
            far = shares[self.FAR_LAG]
            features += [shares[lag] - far for lag in self.LAGS] + [far]
            across, down = differences[1]
            # share of equal pairs per column (per row): high and low in turn at block borders
            columns = (across <= tolerance).float().mean(1).std(1)
            rows = (down <= tolerance).float().mean(2).std(1)
            features.append((columns + rows) / 2)
        return torch.stack(features, dim=1)


class NoiseResidualNet(nn.Module):
    """Noise scorer's front end: the finest wavelet detail, at two scales, beside texture.

    The diagonal Haar detail ``(a - b - c + d) / 2`` of 2x2 blocks keeps white noise
    at its own sigma and cancels smooth shading; its median over a patch is the
    classical wavelet noise estimate. Texture puts detail there too, but more of it one
    scale coarser (after 2x2 averaging), where white noise halves: the head reads the
    noise from the two scales together. Per patch, for luma and for chroma (R-G,
    B-G), the log of the 10/25/50/75 % quantiles of |detail| at both scales; the
    log spread of the patch's 4x4 means (how structured it is); and the luma median
    of |detail| over its darker and its brighter half (shot noise grows with the
    signal).
    """

    QUANTILES = (0.1, 0.25, 0.5, 0.75)

    def __init__(self):
        super().__init__()
        self.register_buffer("quantiles", torch.tensor(self.QUANTILES), persistent=False)
        self.out_features = 2 * 2 * len(self.QUANTILES) + 3

    @staticmethod
    def _detail(x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> |diagonal Haar detail| (N, C, H/2, W/2)."""
        a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
        c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        return ((a - b - c + d) / 2).abs()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) levels 0-255 -> (N, 19) features."""
        luma = x.mean(1, keepdim=True)
        chroma = torch.cat([x[:, :1] - x[:, 1:2], x[:, 2:] - x[:, 1:2]], dim=1) / 2
        features = []
        for signal in (luma, chroma):
            for scale in (1, 2):
                smaller = nnf.avg_pool2d(signal, scale) if scale > 1 else signal
                detail = self._detail(smaller).flatten(1)
                features.append(torch.quantile(detail, self.quantiles, dim=1).t())
        structure = nnf.avg_pool2d(luma, 4).flatten(1).std(1, keepdim=True)
        fine = self._detail(luma).flatten(1)
        level = nnf.avg_pool2d(luma, 2).flatten(1)
        darker = level <= level.median(1, keepdim=True).values
        dark = torch.nanquantile(fine.masked_fill(~darker, float("nan")), 0.5, dim=1)
        bright = torch.nanquantile(fine.masked_fill(darker, float("nan")), 0.5, dim=1)
        bright = torch.where(bright.isnan(), dark, bright)  # a flat patch: no brighter half
        features += [structure, dark[:, None], bright[:, None]]
        return torch.log(torch.cat(features, dim=1) + 0.5)


def _gaussian_kernel_1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


class EdgeSpreadNet(nn.Module):
    """Blur scorer's front end: how wide the patch's edges are, per direction.

    Gradients fall when a patch is blurred again, and by how much says how blurred it
    already was, whatever its contrast: at an edge blurred by a Gaussian of sigma ``s``
    the steepest gradient falls by ``sqrt(s^2 + b^2) / s`` under a further blur by
    ``b`` (Zhuo and Sim's defocus estimate), and so does the gradient energy of the
    whole patch along any one direction. Two readings of ``s`` in px, each at two pairs
    of blurs (none / 1 px, 1 / 2 px: the second stays sensitive to wide blur):

    - *edges*: at each edge (a local maximum of the gradient along its direction,
      stronger than the patch's noise), from the ratio of the gradients; the 10 %
      quantile per edge direction tells its sharpest edges;
    - *energy*: from the ratio of the gradient energies along the direction where the
      patch is most blurred and along the one where it is least (camera shake widens
      only the edges across its path): the extreme ratios of the two blurs' structure
      tensors (a generalised eigenproblem), less what the patch's noise puts there.

    Features (log widths): first the two *start readings*, the edges' widest direction
    and the energy's most blurred one (a round blur widens all alike); the image's
    score starts as their mean (the log of their geometric mean). Then quantiles of the
    edge readings over every edge and per direction (four), the energy readings, the
    edge counts, the gradient energy and the noise. A patch with too little evidence
    (fewer than ``MIN_EDGES`` edges, ``MIN_DIRECTION_EDGES`` in a direction, gradient
    energy under ``MIN_ENERGY``) reads ``WIDEST`` there: it shows no sharp edge, so a
    low quantile over an image's patches is decided by the patches that have edges.
    Measured on photos blurred at their own resolution (docs/experiments.md): a CNN
    from scratch ranked Gaussian, defocus and shake blur lower and read a less
    contrasty photo as blurrier (|Spearman| 0.54 against contrast; here 0.10).
    """

    REBLUR = (1.0, 2.0)  # px
    DIRECTIONS = 4
    POOLED_QUANTILES = (0.1, 0.05, 0.25, 0.5)
    DIRECTION_QUANTILES = (0.1, 0.5)
    MIN_EDGES = 20
    MIN_DIRECTION_EDGES = 6
    MIN_ENERGY = 1.0  # mean squared gradient after the 1-px blur, (levels / px)^2
    WIDEST = 10.0  # px: what a patch without evidence of sharpness reads
    WIDTH_FLOOR = 0.1  # px: the log of a width reads no finer
    # an edge's gradient (after the 1-px blur) must exceed this many noise sigmas
    NOISE_MARGIN = 0.75
    MIN_GRADIENT = 2.0  # levels per px: weaker steps are shading, not edges
    BORDER = 4  # px at the patch's sides, where the filters see past it
    _DIAGONAL = torch.tensor([1.0, 0.0, 1.0])  # white noise adds to xx and yy alone

    def __init__(self):
        super().__init__()
        self._reblur_taps = [_gaussian_kernel_1d(sigma).tolist() for sigma in self.REBLUR]
        # gradient energy that white noise of sigma 1 leaves in each derivative, per
        # blur: the energy of the filters' impulse responses (the sum of squared taps)
        impulse = torch.zeros(1, 1, 41, 41)
        impulse[..., 20, 20] = 1.0
        taps = [g[:, 0].square().sum() for g in self._gradients(impulse)]
        self.register_buffer("noise_energy", torch.stack(taps), False)
        pooled, per_direction = len(self.POOLED_QUANTILES), len(self.DIRECTION_QUANTILES)
        widths = 2 + 2 * pooled + self.DIRECTIONS * 2 * per_direction + 4
        self.out_features = widths + (1 + self.DIRECTIONS) + 2

    # Small filters as sums of shifted slices: oneDNN's convolutions of one channel
    # with these kernels ran at a hundredth of the speed (56 ms against 5 for 1 MP)
    @staticmethod
    def _filter(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
        """``x`` padded by ``len(taps) // 2`` along ``dim`` (-1 or -2), filtered by
        ``taps`` along it (correlation): the size it had before padding."""
        size = x.shape[dim] - len(taps) + 1
        out = taps[0] * x.narrow(dim, 0, size)
        for i, tap in enumerate(taps[1:], start=1):
            if tap:  # a zero tap adds nothing (the derivative's centre): two passes saved
                out = out + tap * x.narrow(dim, i, size)
        return out

    def _reblurred(self, x: torch.Tensor, index: int) -> torch.Tensor:
        taps = self._reblur_taps[index]
        r = len(taps) // 2
        x = self._filter(nnf.pad(x, (r, r, 0, 0), mode="reflect"), taps, -1)
        return self._filter(nnf.pad(x, (0, 0, r, r), mode="reflect"), taps, -2)

    def _gradients(self, luma: torch.Tensor) -> list[torch.Tensor]:
        """(N, 1, H, W) -> its Sobel gradient / 8 (N, 2, H, W: along x, along y),
        unblurred and after each reblur."""
        blurred = [luma] + [self._reblurred(luma, i) for i in range(len(self.REBLUR))]
        gradients = []
        for b in blurred:
            p = nnf.pad(b, (1, 1, 1, 1), mode="replicate")
            across = self._filter(self._filter(p, [-0.5, 0.0, 0.5], -1), [0.25, 0.5, 0.25], -2)
            down = self._filter(self._filter(p, [-0.5, 0.0, 0.5], -2), [0.25, 0.5, 0.25], -1)
            gradients.append(torch.cat([across, down], dim=1))
        return gradients

    @staticmethod
    def _structure_tensor(gradient: torch.Tensor, border: int) -> torch.Tensor:
        """Mean ``g g^T`` over the patch inside ``border``: (N, 3) entries xx, xy, yy."""
        g = gradient[..., border:-border, border:-border].flatten(2)
        gx, gy = g[:, 0], g[:, 1]
        return torch.stack([(gx * gx).mean(1), (gx * gy).mean(1), (gy * gy).mean(1)], 1)

    @staticmethod
    def _positive(tensor: torch.Tensor) -> torch.Tensor:
        """A structure tensor (N, 3) made positive definite: the diagonal at least
        1e-6 and the off-diagonal within the diagonal's geometric mean."""
        xx, xy, yy = tensor.unbind(1)
        xx, yy = xx.clamp(min=1e-6), yy.clamp(min=1e-6)
        limit = (xx * yy).sqrt() * (1 - 1e-4)
        return torch.stack([xx, xy.clamp(-limit, limit), yy], 1)

    @staticmethod
    def _extreme_ratios(sharper: torch.Tensor, blurrier: torch.Tensor) -> torch.Tensor:
        """The lowest and highest ratio, over directions ``u``, of the energies
        ``u^T J u`` of two structure tensors (N, 3): the roots of
        ``det(sharper - r * blurrier) = 0``. (N, 2)."""
        a0, b0, c0 = sharper.unbind(1)
        a1, b1, c1 = blurrier.unbind(1)
        quadratic = (a1 * c1 - b1.square()).clamp(min=1e-9)
        linear = -(a0 * c1 + c0 * a1 - 2 * b0 * b1)
        constant = a0 * c0 - b0.square()
        root = (linear.square() - 4 * quadratic * constant).clamp(min=0).sqrt()
        return torch.stack([(-linear - root), (-linear + root)], 1) / (2 * quadratic[:, None])

    @staticmethod
    def _local_maxima(magnitude: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        """Pixels whose gradient ``magnitude`` (N, H, W) is at least that of both
        neighbours along its direction (``angle``, quantised to 4 directions)."""
        along = torch.remainder(torch.round(angle / (math.pi / 4)), 4).long()
        height, width = magnitude.shape[-2:]
        padded = nnf.pad(magnitude[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]

        def shifted(dy: int, dx: int) -> torch.Tensor:
            return padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

        peak = torch.zeros_like(magnitude, dtype=torch.bool)
        for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
            neighbours = (magnitude >= shifted(dy, dx)) & (magnitude >= shifted(-dy, -dx))
            peak |= (along == k) & neighbours
        return peak

    @staticmethod
    def _widths(ratio: torch.Tensor, low: float, high: float, widest: float) -> torch.Tensor:
        """Gaussian sigma (px) from the ratio of gradients (or of energies) across a
        further blur from ``low`` to ``high`` px: ``ratio^2 = (s^2 + high^2) / (s^2 +
        low^2)``, so ``s^2 = (high^2 - low^2 ratio^2) / (ratio^2 - 1)``."""
        squared = ratio.square()
        width = (high**2 - low**2 * squared) / (squared - 1).clamp(min=1e-4)
        return width.clamp(0, widest**2).sqrt()

    def readings(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) levels -> per pixel: the edge width readings ``fine`` and
        ``wide`` (px), the edge ``direction`` (0-3) and whether it is an ``edge``; per
        patch the energy readings ``energy_fine`` and ``energy_wide`` (N, 2: the most
        and the least blurred direction), the gradient ``energy`` and the ``noise``
        sigma (N,)."""
        luma = x.mean(1, keepdim=True)
        a, b = luma[..., 0::2, 0::2], luma[..., 0::2, 1::2]
        c, d = luma[..., 1::2, 0::2], luma[..., 1::2, 1::2]
        noise = ((a - b - c + d) / 2).abs().flatten(1).median(1).values / 0.6745
        g0, g1, g2 = self._gradients(luma)
        m0, m1, m2 = (g.square().sum(1).add(1e-12).sqrt() for g in (g0, g1, g2))
        angle = torch.atan2(g1[:, 1], g1[:, 0])
        threshold = (self.NOISE_MARGIN * noise).clamp(min=self.MIN_GRADIENT)[:, None, None]
        edge = self._local_maxima(m1, angle) & (m1 > threshold)
        inner = torch.zeros_like(edge)
        inner[:, self.BORDER : -self.BORDER, self.BORDER : -self.BORDER] = True
        direction = torch.round(torch.remainder(angle, math.pi) * 4 / math.pi)
        # structure tensors less what the noise adds to each derivative's energy (a
        # patch of noise alone keeps a trace of energy, and reads flat)
        j0, j1, j2 = (
            self._structure_tensor(g, self.BORDER)
            - self.noise_energy[i] * noise[:, None].square() * self._DIAGONAL.to(x.device)
            for i, g in enumerate((g0, g1, g2))
        )
        j0, j1, j2 = (self._positive(j) for j in (j0, j1, j2))
        w = self.WIDEST
        return {
            "fine": self._widths(m0 / m1, 0.0, 1.0, w),
            "wide": self._widths(m1 / m2, 1.0, 2.0, w),
            "direction": torch.remainder(direction, 4).long(),
            "edge": edge & inner,
            # energy falls as 1 / width: its ratio reads like the gradients' ratio; the
            # lowest ratio is the most blurred direction, the highest the least
            "energy_fine": self._widths(self._extreme_ratios(j0, j1), 0.0, 1.0, w),
            "energy_wide": self._widths(self._extreme_ratios(j1, j2), 1.0, 2.0, w),
            "energy": (j1[:, 0] + j1[:, 2]).clamp(min=0.0),
            "noise": noise,
        }

    @staticmethod
    def _grouped_quantiles(
        values: torch.Tensor, groups: torch.Tensor, count: int, levels: torch.Tensor
    ) -> torch.Tensor:
        """Quantiles (``torch.quantile``'s linear interpolation, the same values) of
        ``values`` (M,) within each of ``count`` groups (``groups``: M ids), NaN for an
        empty group: (count, len(levels)).

        Edges are a few per cent of a patch's pixels: sorting them alone, once, costs a
        fraction of ``nanquantile``, which sorts every pixel of every patch per call
        (a quarter of this front end's time). ``values`` must not be negative: the bits
        of non-negative floats sort as their values do, so one integer sort of (group,
        bits) orders both, exactly (three times faster than sorting the floats)."""
        bits = values.abs().contiguous().view(torch.int32).to(torch.int64)
        keys = torch.sort(groups.to(torch.int64) << 32 | bits).values
        ordered = (keys & 0xFFFFFFFF).to(torch.int32).view(torch.float32)
        sizes = torch.bincount(groups, minlength=count)
        starts = torch.cumsum(sizes, 0) - sizes
        ranks = levels[None, :] * (sizes[:, None] - 1).to(levels.dtype)
        below = ranks.to(torch.long)
        weights = ranks - below
        above = ranks.ceil().to(torch.long)
        last = max(len(ordered) - 1, 0)
        padded = ordered if len(ordered) else values.new_full((1,), float("nan"))
        low = padded[(starts[:, None] + below).clamp(0, last)]
        high = padded[(starts[:, None] + above).clamp(0, last)]
        quantiles = low.lerp(high, weights)
        return quantiles.masked_fill((sizes == 0)[:, None], float("nan"))

    def _quantiles(
        self, reading: torch.Tensor, groups: torch.Tensor, chosen: torch.Tensor, count: int, levels
    ) -> torch.Tensor:
        """Quantiles of ``reading`` (N, H, W) at the ``chosen`` pixels (indices into the
        flat readings) within each of ``count`` groups (``groups``: one per chosen
        pixel): (count, len(levels)), NaN for a group without any."""
        values = reading.flatten()[chosen]
        levels = torch.tensor(levels, device=values.device)
        return self._grouped_quantiles(values, groups, count, levels)

    def _edge_features(self, r: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list, list]:
        """The edges' start reading (N,), their width quantiles and counts."""
        n = r["edge"].shape[0]
        edge = r["edge"].flatten(1)
        chosen = edge.flatten().nonzero().squeeze(1)
        patch = torch.div(chosen, edge.shape[1], rounding_mode="floor")
        direction = r["direction"].flatten()[chosen]
        per_direction = patch * self.DIRECTIONS + direction
        counts_pooled = torch.bincount(patch, minlength=n)
        counts_direction = torch.bincount(per_direction, minlength=n * self.DIRECTIONS)
        counts_direction = counts_direction.view(n, self.DIRECTIONS)

        def enough(q: torch.Tensor, counts: torch.Tensor, fewest: int) -> torch.Tensor:
            keep = (counts >= fewest)[:, None]
            return torch.where(keep, q, torch.full_like(q, self.WIDEST)).nan_to_num(self.WIDEST)

        widths = []
        for reading in ("fine", "wide"):
            q = self._quantiles(r[reading], patch, chosen, n, self.POOLED_QUANTILES)
            widths.append(enough(q, counts_pooled, self.MIN_EDGES))
        by_direction = {
            reading: self._quantiles(
                r[reading], per_direction, chosen, n * self.DIRECTIONS, self.DIRECTION_QUANTILES
            ).view(n, self.DIRECTIONS, -1)
            for reading in ("fine", "wide")
        }
        counts, sharpest = [counts_pooled[:, None]], []
        for k in range(self.DIRECTIONS):
            told = counts_direction[:, k] >= self.MIN_DIRECTION_EDGES
            for reading in ("fine", "wide"):
                q = by_direction[reading][:, k]
                widths.append(enough(q, counts_direction[:, k], self.MIN_DIRECTION_EDGES))
            sharpest.append(torch.where(told, widths[-2][:, 0], -math.inf))
            counts.append(counts_direction[:, k : k + 1])
        # the widest direction with enough edges; else every edge's; else WIDEST
        start = torch.stack(sharpest, 1).amax(1)
        return torch.where(start.isfinite(), start, widths[0][:, 0]), widths, counts

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) levels 0-255 -> (N, 37) features, the two start readings first."""
        r = self.readings(x)
        edge_start, edge_widths, counts = self._edge_features(r)
        flat = (r["energy"] < self.MIN_ENERGY)[:, None]
        energy_widths = [r["energy_fine"].masked_fill(flat, self.WIDEST), r["energy_wide"]]
        energy_start = energy_widths[0].amax(1)
        widths = torch.cat(
            [edge_start[:, None], energy_start[:, None], *edge_widths, *energy_widths], dim=1
        )
        return torch.cat(
            [
                torch.log(widths + self.WIDTH_FLOOR),
                torch.log1p(torch.cat(counts, dim=1).float()),
                torch.log(r["energy"][:, None] + 1.0),
                torch.log(r["noise"][:, None] + 0.5),
            ],
            dim=1,
        )

    def start_weights(self) -> torch.Tensor:
        """A linear head that reads the mean of the two start readings (log widths)."""
        weights = torch.zeros(self.out_features)
        weights[:2] = 0.5
        return weights


def _sobel(image: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 2, H - 2, W - 2): the Sobel gradients (x, y) of
    ``OrientationHistogramNet.sobel``, as ``conv2d`` with it would give them (to float
    rounding), by slicing: about 5 times faster on a CPU than a 1-to-2-channel conv."""
    across = image[..., :, 2:] - image[..., :, :-2]
    down = image[..., 2:, :] - image[..., :-2, :]
    gx = across[..., :-2, :] + 2 * across[..., 1:-1, :] + across[..., 2:, :]
    gy = down[..., :, :-2] + 2 * down[..., :, 1:-1] + down[..., :, 2:]
    return torch.cat([gx, gy], dim=1) / 8


class OrientationHistogramNet(nn.Module):
    """Tilt scorer: a learned 1-D network over the image's histogram of edge orientations.

    Edges of level scenes cluster at 0 and 90 degrees, and a tilt shifts every edge
    orientation by the same angle. The fixed front end (Sobel gradients at two scales,
    magnitude-weighted orientation histograms with linear binning) turns the image
    into that distribution; the learned part reads how far the near-horizontal and
    near-vertical edges sit from exactly 0 and 90 degrees. It sees only a window of
    +-``window`` degrees around each (diagonal structure says nothing about level),
    both windows stacked as channels. The score is made odd under mirroring
    (``g(h) - g(mirror(h))``): a mirrored image has the opposite tilt, and a
    mirror-symmetric scene scores exactly 0.
    """

    def __init__(self, window: int = 24):
        super().__init__()
        self.window = window  # one bin per degree
        # the Sobel taps that _sobel applies, kept as a buffer: saved models hold it
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        self.register_buffer("sobel", torch.stack([sobel_x, sobel_x.t()])[:, None])
        channels = 8  # 2 scales x 2 weightings x 2 windows, one bin per degree
        # A linear reader: a few photos are enough to fit it. It starts as the classical
        # estimator, minus the mean offset of the edges from 0 / 90 degrees (a rotation
        # by +theta moves them by -theta), and training reweighs bins and channels.
        self.reader = nn.Sequential(nn.Flatten(), nn.Linear(channels * 2 * window, 1))
        offsets = torch.arange(2 * window, dtype=torch.float32) - (window - 0.5)
        template = -(offsets / window).repeat(channels) / channels
        with torch.no_grad():
            self.reader[1].weight.copy_(template[None])
            self.reader[1].bias.zero_()
        self.out_features = 1

    @torch.no_grad()
    def histograms(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, 8, 2 * window) orientation histograms.

        Bin ``i`` of a window covers edge orientations ``[i - window, i - window + 1)``
        degrees away from horizontal (channels 0-3) or vertical (channels 4-7).
        """
        gray = x.mean(dim=1, keepdim=True)
        full = []
        for image in (gray, nn.functional.avg_pool2d(gray, 2)):
            gradient = _sobel(image)
            magnitude = gradient.pow(2).sum(1).add(1e-12).sqrt().flatten(1)
            # edge orientation in [0, 180): the gradient direction turned by 90 degrees
            angle = torch.rad2deg(torch.atan2(gradient[:, 1], gradient[:, 0])).flatten(1)
            position = torch.remainder(angle + 90.0, 180.0)
            lower = position.floor().long() % 180
            upper_share = position - position.floor()
            for weight in (magnitude, magnitude.sqrt()):
                histogram = torch.zeros(len(x), 180, device=x.device)
                histogram.scatter_add_(1, lower, weight * (1 - upper_share))
                histogram.scatter_add_(1, (lower + 1) % 180, weight * upper_share)
                full.append(histogram / histogram.sum(1, keepdim=True).clamp(min=1e-12))
        full = torch.stack(full, dim=1)  # (N, 4, 180), bin b: orientation [b, b + 1)
        w = self.window
        horizontal = torch.roll(full, w, dims=-1)[..., : 2 * w]
        vertical = full[..., 90 - w : 90 + w]
        windows = torch.cat([horizontal, vertical], dim=1)
        # shape within each window, independent of how much diagonal structure there is
        return windows / windows.sum(-1, keepdim=True).clamp(min=1e-12) * (2 * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        histogram = self.histograms(x)
        # mirroring maps orientation phi to 180 - phi: each window reverses in place
        mirrored = histogram.flip(-1)
        return self.reader(histogram) - self.reader(mirrored)


# what the line reader can say: a segment's offset from the nearest axis
LINE_TILT_SPAN = (-45.0, 45.0)


class LineTiltNet(nn.Module):
    """Tilt scorer: the tilt that the image's long straight lines agree on
    (:func:`siamese_quality.core.tilt.read_tilt`), in degrees, as its one feature.

    The front end is fixed (OpenCV's line-segment detector, on the CPU) and reads
    degrees (``reads_units``): training only measures it on the held-out images.
    Beside the score it reports a confidence (:meth:`confidence`): the share of the
    lines' vote that agrees with the reading, low for a photo with no upright.
    """

    def __init__(self):
        super().__init__()
        self.out_features = 1

    @staticmethod
    def readings(x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) 0-255 levels -> (N, 2): tilt in degrees, confidence 0-1."""
        from .tilt import read_tilt

        grey = x.detach().mean(dim=1).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        values = [read_tilt(image) for image in grey]
        return torch.tensor(values, dtype=torch.float32, device=x.device).view(len(x), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readings(x)[:, :1]

    def confidence(self, x: torch.Tensor) -> torch.Tensor:
        return self.readings(x)[:, 1]


# degrees per unit of the edge histogram's untrained reading (OrientationHistogramNet's
# start) on a 256-px view: the slope on scikit-image's grey photos turned by -30 to +30
# where that reading ranks the angle (brick, camera, grass, page, text), photos the tilt
# benchmark does not test on. The reading's scale falls with the share of edges off the
# two axes, so it leans toward level in a photo with little straight structure.
EDGE_READING_DEGREES = 0.65


class LinesOrEdgesNet(nn.Module):
    """Tilt scorer without training: the long straight lines' tilt
    (:class:`LineTiltNet`) where they are sure of it, the edge-orientation histogram's
    classical reading (:class:`OrientationHistogramNet` as it starts, in degrees)
    elsewhere. Its confidence is the lines'.

    On the tilt benchmark's photos the lines are sure of a quarter, right within 3
    degrees on three quarters of those; the edges' reading ranks the rest better than
    the lines' (which is arbitrary where nothing is straight) and better than the same
    histogram trained on a fold's ~30 photos (RESULTS.md, tilt).
    """

    def __init__(self):
        super().__init__()
        self.lines = LineTiltNet()
        self.edges = OrientationHistogramNet()
        self.edges.requires_grad_(False)  # a fixed reader: nothing here trains
        self.out_features = 1

    def readings(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) 0-255 levels -> (N, 2): tilt in degrees, the lines' confidence."""
        from .tilt import LINES_SURE

        lines = self.lines.readings(x)
        tilt = lines[:, 0].clone()
        unsure = lines[:, 1] < LINES_SURE  # only these need the edges' reading
        if unsure.any():
            edges = self.edges(x[unsure])[:, 0] * EDGE_READING_DEGREES
            tilt[unsure] = edges.clamp(*LINE_TILT_SPAN)
        return torch.stack([tilt, lines[:, 1]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readings(x)[:, :1]

    def confidence(self, x: torch.Tensor) -> torch.Tensor:
        return self.lines.readings(x)[:, 1]


# the classical baselines' grey (OpenCV's RGB to grey)
_LUMA = (0.299, 0.587, 0.114)


def _mean_grey(levels: torch.Tensor) -> torch.Tensor:
    """(N, 3, L) levels -> each image's mean grey (N,)."""
    luma = torch.tensor(_LUMA, device=levels.device).view(1, 3, 1)
    return (levels * luma).sum(1).mean(1)


def _first_feature(features: int) -> torch.Tensor:
    """Start weights of a linear head that reads the first feature as it is."""
    weights = torch.zeros(features)
    weights[0] = 1.0
    return weights


def _row_quantiles(rows: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """(N, L) -> the ``quantiles`` of each row: (N, len(quantiles))."""
    # in chunks: torch.quantile refuses inputs over 2**24 elements in torch versions
    # we support, which 64 images at 512 px already are (one chunk at the defaults)
    per_chunk = max(1, 2**24 // rows.shape[1])
    chunks = [torch.quantile(chunk, quantiles, dim=1).t() for chunk in rows.split(per_chunk)]
    return torch.cat(chunks)


class TonalReachNet(nn.Module):
    """Contrast scorer's front end: how far the tones reach from the mean grey, per tail.

    Contrast ``f`` about the mean grey ``m`` moves every level ``v`` to
    ``m + f * (v - m)``. The distance of a dark quantile of the darkest channel from
    ``m``, over the room there is (``m``), therefore reads ``f`` wherever that tail
    reaches black; a bright quantile of the brightest channel, over ``255 - m``, reads
    it wherever the tail reaches white. The front end gives those ratios for several
    tails (0.5 % to 25 %), the shares of pixels clipped at black and at white (zero
    below factor 1, they order the points above it) and ``m`` itself; the head learns
    which to trust. A CNN trained on the same photos does not find this cue: on held-out
    photos it trails the fixed formula (``baselines.tonal_reach``) below factor 1 even
    when the training photos are first normalised to satisfy it (benchmarks/RESULTS.md).
    """

    TAILS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25)

    def __init__(self):
        super().__init__()
        tails = torch.tensor(self.TAILS)
        self.register_buffer("dark_quantiles", tails, persistent=False)
        self.register_buffer("bright_quantiles", 1 - tails, persistent=False)
        self.out_features = 2 * len(self.TAILS) + 3

    def _tails(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) levels 0-255 -> the levels (N, 3, H * W), the darkest and the
        brightest channel per pixel (N, H * W) and their quantiles at ``TAILS``."""
        levels = x.flatten(2)
        darkest, brightest = levels.amin(dim=1), levels.amax(dim=1)
        dark = _row_quantiles(darkest, self.dark_quantiles)
        bright = _row_quantiles(brightest, self.bright_quantiles)
        return levels, darkest, brightest, dark, bright

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(*self._tails(x))

    @staticmethod
    def _features(levels, darkest, brightest, dark, bright) -> torch.Tensor:
        mean_grey = levels.mean(dim=(1, 2))[:, None]
        return torch.cat(
            [
                (mean_grey - dark) / mean_grey.clamp(min=1.0),
                (bright - mean_grey) / (255.0 - mean_grey).clamp(min=1.0),
                (darkest <= 0.5).float().mean(dim=1, keepdim=True),
                (brightest >= 254.5).float().mean(dim=1, keepdim=True),
                mean_grey / 255.0,
            ],
            dim=1,
        )


class TonalReachStartNet(TonalReachNet):
    """:class:`TonalReachNet`'s features after one more, the classical tonal reach
    (``baselines.tonal_reach``: the larger of the 1 % tails' ratios, plus the share of
    pixels clipped at black or white), which a linear head starts from and keeps unless
    training beats it on the checkpoint images. The MLP head over the other features
    ranked contrast below that formula on photos as stored (0.88 against 0.94,
    benchmarks/RESULTS.md)."""

    def __init__(self):
        super().__init__()
        self.out_features += 1

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tails = self._tails(x)  # the 1 % tails are among the quantiles the features read
        levels, darkest, brightest, dark, bright = tails
        one_percent = self.TAILS.index(0.01)
        dark, bright = dark[:, one_percent], bright[:, one_percent]
        grey = _mean_grey(levels)
        reach = torch.maximum(
            (grey - dark) / grey.clamp(min=1.0), (bright - grey) / (255.0 - grey).clamp(min=1.0)
        )
        clipped = ((darkest <= 0.5) | (brightest >= 254.5)).float().mean(1)
        return torch.cat([(reach + clipped)[:, None], self._features(*tails)], dim=1)

    def start_weights(self) -> torch.Tensor:
        """A linear head that reads the tonal reach (the first feature) as it is."""
        return _first_feature(self.out_features)


class ExposureLevelsNet(nn.Module):
    """Brightness scorer's front end: the mean grey beside the highlights.

    A photo's mean level mixes its exposure with its scene (a night street exposed
    well is darker than a beach), and no reader of the level alone ranks added
    exposure across photos much beyond 0.7 (``benchmarks/level_ceilings.py``). Most
    scenes hold a highlight near white (a light, a reflection, sky), and exposure moves
    it with the rest while the scene hardly decides it: an underexposed photo has
    none, an overexposed one clips. The start reading is ``log(1 + mean grey) +
    HIGHLIGHT_WEIGHT * log(1 + the 99.9 % quantile of HSV value)``; beside it, the
    log quantiles of value, the log mean grey and the shares at black and at white,
    for a linear head that keeps the start unless training beats it. A tone curve
    (gamma) moves the mid-tones and leaves the highlights: the weight trades one for
    the other (chosen on OpenCV's sample photos, docs/experiments.md).
    """

    HIGHLIGHT = 0.999
    HIGHLIGHT_WEIGHT = 2.0
    QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)

    def __init__(self):
        super().__init__()
        self.register_buffer("quantiles", torch.tensor(self.QUANTILES), persistent=False)
        self.out_features = 1 + len(self.QUANTILES) + 3

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) levels 0-255 -> (N, 12) features, the start reading first."""
        flat = x.flatten(2)
        value = flat.amax(dim=1)
        levels = _row_quantiles(value, self.quantiles)
        grey = _mean_grey(flat)[:, None]
        highlight = levels[:, self.QUANTILES.index(self.HIGHLIGHT)][:, None]
        start = torch.log1p(grey) + self.HIGHLIGHT_WEIGHT * torch.log1p(highlight)
        black = (value <= 0.5).float().mean(1, keepdim=True)
        white = (value >= 254.5).float().mean(1, keepdim=True)
        return torch.cat([start, torch.log1p(levels), torch.log1p(grey), black, white], dim=1)

    def start_weights(self) -> torch.Tensor:
        """A linear head that reads the start reading (the first feature) as it is."""
        return _first_feature(self.out_features)


def _load_state_dict_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


@dataclass(frozen=True)
class BackboneSpec:
    """Everything about one backbone, in one place.

    Attributes:
        name: what ``TrainingConfig.backbone`` and model files call it
        build: ``f(pretrained) -> (encoder, feature size)``
        mean, std: per-channel normalisation of 0-1 levels before the encoder
        channels_last: whether the encoder has convolutions (oneDNN runs them about
            twice as fast on NHWC tensors on a CPU)
        head: ``"mlp"`` (features -> 64 -> 1) or ``"odd_linear"`` (one weight, no bias:
            keeps an encoder's mirror-odd score odd, see :class:`OrientationHistogramNet`)
        confidence: the encoder also tells how sure it is of each score, 0-1
            (``encoder.confidence``, see :class:`LineTiltNet`)
        reads_units: the (low, high) span of the encoder's score where that score already
            is the magnitude in the task's unit (:class:`LineTiltNet` measures degrees):
            nothing trains, and the calibration is the identity over it, so no fit can
            flatten a reading that was right
        working_resolution: the view size the backbone reads best at, used when the
            user gives none (before the task's own default)
        pretrained_weights: ``pretrained`` (torchvision's weights, or a file) can load
            into it
    """

    name: str
    build: Callable[[bool | str], tuple[nn.Module, int]]
    mean: tuple[float, float, float] = _SMALL_CNN_MEAN
    std: tuple[float, float, float] = _SMALL_CNN_STD
    channels_last: bool = False
    head: str = "mlp"
    # the encoder has ``confidence(x) -> (N,)``: its models also write ``<field>_confidence``
    confidence: bool = False
    reads_units: tuple[float, float] | None = None
    working_resolution: int | None = None
    pretrained_weights: bool = False


def _from_scratch(
    name: str, module: type[nn.Module]
) -> Callable[[bool | str], tuple[nn.Module, int]]:
    def build(pretrained: bool | str) -> tuple[nn.Module, int]:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; it trains from scratch")
        encoder = module()
        return encoder, encoder.out_features

    return build


def _torchvision(name: str) -> Callable[[bool | str], tuple[nn.Module, int]]:
    """A torchvision classifier without its classifier: ``pretrained=True`` uses
    torchvision's default ImageNet weights (downloaded once to torch's cache), a path
    loads a local state-dict file (``weights_only=True``) for offline machines."""

    def build(pretrained: bool | str) -> tuple[nn.Module, int]:
        import torchvision.models as tvm

        weights = tvm.get_model_weights(name).DEFAULT if pretrained is True else None
        try:
            model = tvm.get_model(name, weights=weights)
        except Exception as error:  # offline, or a broken cached download
            if weights is None:
                raise
            cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
            raise RuntimeError(
                f"could not load torchvision's ImageNet weights for {name} ({error}). They "
                f"download once to {cache}; on an offline machine copy the file there, or "
                "pass its path as pretrained"
            ) from error
        if isinstance(pretrained, str | os.PathLike):
            state = _load_state_dict_file(os.fspath(pretrained))
            missing, _ = model.load_state_dict(state, strict=False)
            if any(not k.startswith(("fc.", "classifier.")) for k in missing):
                raise ValueError(f"{pretrained}: not {name} weights (missing {missing[:3]}...)")
        if hasattr(model, "fc"):
            features, model.fc = model.fc.in_features, nn.Identity()
        else:
            features, model.classifier = model.classifier[0].in_features, nn.Identity()
        return model, features

    return build


_BACKBONE_SPECS: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Adds a backbone; ``TrainingConfig.backbone`` and the App's train form list it."""
    if spec.head not in ("mlp", "odd_linear", "linear"):
        raise ValueError(
            f"{spec.name}: head must be 'mlp', 'odd_linear' or 'linear', got {spec.head!r}"
        )
    _BACKBONE_SPECS[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    if name not in _BACKBONE_SPECS:
        raise ValueError(f"Unknown backbone {name!r}; available: {', '.join(_BACKBONE_SPECS)}")
    return _BACKBONE_SPECS[name]


_RAW = {"mean": _RAW_MEAN, "std": _RAW_STD}
_FIXED_TILT = {
    "head": "odd_linear",
    "confidence": True,
    "reads_units": LINE_TILT_SPAN,
    "working_resolution": 256,
    **_RAW,
}
_IMAGENET = {
    "mean": _IMAGENET_MEAN,
    "std": _IMAGENET_STD,
    "channels_last": True,
    "pretrained_weights": True,
}


def _scratch(name: str, module: type[nn.Module], **options) -> BackboneSpec:
    return BackboneSpec(name, _from_scratch(name, module), **options)


for _spec in (
    _scratch("small_cnn", SmallCNN, channels_last=True),
    _scratch("pixel_grid", PixelGridNet, **_RAW),
    _scratch("noise_residual", NoiseResidualNet, **_RAW),
    _scratch("edge_spread", EdgeSpreadNet, head="linear", **_RAW),
    _scratch("orientation", OrientationHistogramNet, head="odd_linear"),
    # the line detector needs segments of some length: 256 px (a 182-px centre square)
    _scratch("lines", LineTiltNet, **_FIXED_TILT),
    _scratch("lines_or_edges", LinesOrEdgesNet, **_FIXED_TILT),
    _scratch("tonal", TonalReachNet, **_RAW),
    _scratch("tonal_reach", TonalReachStartNet, head="linear", **_RAW),
    _scratch("exposure_levels", ExposureLevelsNet, head="linear", **_RAW),
    BackboneSpec("resnet18", _torchvision("resnet18"), **_IMAGENET),
    BackboneSpec("mobilenet_v3_small", _torchvision("mobilenet_v3_small"), **_IMAGENET),
):
    register_backbone(_spec)

# a view of the registry's names, for forms and messages (registered ones included)
BACKBONES = _BACKBONE_SPECS.keys()
DEFAULT_BACKBONE = "small_cnn"


def build_encoder(backbone: str, pretrained: bool | str = False) -> tuple[nn.Module, int]:
    """Builds the encoder of a branch and returns it with its feature size.

    Args:
        backbone: a registered backbone (:data:`BACKBONES`)
        pretrained: torchvision backbones only. ``True`` uses torchvision's default
            ImageNet weights (downloaded once to torch's cache), a path loads a local
            state-dict file (``weights_only=True``) for offline machines.
    """
    return get_backbone(backbone).build(pretrained)


class QualityBranch(nn.Module):
    """One branch: uint8 images (N, 3, H, W) -> one score per image (N,)."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, pretrained: bool | str = False):
        super().__init__()
        spec = get_backbone(backbone)
        self.backbone = backbone
        self.encoder, features = spec.build(pretrained)
        if spec.head == "linear":
            # starts as the encoder's own classical reading (``start_weights``)
            self.head = nn.Linear(features, 1)
            with torch.no_grad():
                self.head.weight.copy_(self.encoder.start_weights()[None])
                self.head.bias.zero_()
        elif spec.head == "odd_linear":
            # the encoder already gives the (mirror-odd) score: keep it odd, start as is
            self.head = nn.Linear(features, 1, bias=False)
            nn.init.ones_(self.head.weight)
        else:
            self.head = nn.Sequential(
                nn.Linear(features, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)
            )
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0)
        # fixed front ends read the levels as they are: normalising them to themselves
        # took up to a quarter of their scoring time
        self.reads_raw_levels = (spec.mean, spec.std) == (_RAW_MEAN, _RAW_STD)
        self.folded = False  # True for the copy for_inference makes
        self.channels_last = spec.channels_last
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # one copy (to float, in the encoder's memory format), then in place
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        x = images.to(torch.float32, memory_format=memory_format, copy=True)
        if not self.reads_raw_levels:
            x = x.sub_(self.mean).div_(self.std)
        return self.head(self.encoder(x)).squeeze(1)

    @torch.inference_mode()
    def score(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Scores uint8 images (N, 3, H, W) in eval mode; returns a float tensor (N,)."""
        branch = self.for_inference()
        device = next(branch.parameters()).device
        chunks = [
            branch(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0)

    @torch.inference_mode()
    def confidence(self, images: torch.Tensor) -> torch.Tensor | None:
        """How sure the encoder is of each uint8 image's score (N,), 0-1, or None when
        its backbone does not say (``BackboneSpec.confidence``)."""
        if not get_backbone(self.backbone).confidence:
            return None
        x = images.to(torch.float32)
        if not self.reads_raw_levels:
            x = x.sub(self.mean).div(self.std)
        return self.encoder.confidence(x).float().cpu()

    def for_inference(self) -> QualityBranch:
        """An eval-mode copy with each batch norm folded into its convolution: the same
        scores (to float rounding) for about a fifth less CPU. Every scoring path goes
        through it, so training's checkpoint choice and calibration see what scoring does."""
        if self.folded and not self.training:
            return self  # already such a copy: scoring a dataset copies the branch once
        branch = copy.deepcopy(self).eval()
        for block in getattr(branch.encoder, "features", ()):
            if isinstance(block, nn.Sequential) and isinstance(block[1], nn.BatchNorm2d):
                block[0] = fuse_conv_bn_eval(block[0], block[1])
                block[1] = nn.Identity()
        branch.folded = True
        return branch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA, then Apple MPS, then CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
