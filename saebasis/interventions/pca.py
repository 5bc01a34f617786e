"""PCA of paired differences (repeng / steering-vectors `pca_diff`)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from saebasis.interventions.base import register
from saebasis.interventions.diffmean import FittedVector


@register("pca")
class PCADiff(FittedVector):
    """h' = h + s v,  v = (d_bar . u) u,  u = first principal direction of the paired differences
    d_i = h_pos_i - h_neg_i.

    u is the top right-singular vector of the *uncentred* difference matrix D [n, d_model], i.e. the first
    principal component of the sign-symmetrised set {d_i, -d_i} (whose mean is zero), as repeng's pca_diff
    does with randomly ordered pairs. Its sign is fixed so that positives project above negatives
    (d_bar . u > 0), and it is scaled to that mean projection, so strength 1 moves as far along u as the
    average pair differs.
    """

    def fit_means(self, pos_means: Float[Tensor, "n d_model"], neg_means: Float[Tensor, "n d_model"]) -> PCADiff:
        diffs = (pos_means - neg_means).float()  # [n, d_model]
        _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
        u = vh[0]  # [d_model]
        projection = diffs.mean(0) @ u
        if projection < 0:
            u, projection = -u, -projection
        self.v.copy_(projection * u)
        return self
