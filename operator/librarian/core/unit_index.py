"""A two-step index over the routing units' centroids: every unit scored in a few dimensions,
then only the best few scored exactly.

Why this exists: with thousands of fine units (partitions) of high-dimensional
vectors, the product of a query with every unit centroid is most of a routing
decision's cost, and it grows with the units while an engine search grows with
the log of the points. The centroids are projected once onto their leading
directions (the top right singular vectors of the centroid matrix, a sixth of
the dimensions); a query is scored against every unit in that space, and the
``rerank`` units scoring best there are scored exactly. A grouping of the
centroids into coarse cells (an IVF over the centroids) was not chosen: on
centroids without a hierarchy (random directions, as mixture centres are)
a cell's mean says little about its best member, while a projection keeps
each unit's own score, only blurred.

The routing rule needs a softmax over *every* unit, so a unit not re-scored
keeps its projected logit plus a per-unit correction (the part of its centroid
outside the projection adds, on average over queries, a known factor to its
softmax weight), fitted on sample queries.

Whether this is good enough is not assumed: the router builder checks, on its
calibration queries, that the units chosen with the index equal those of the
full scan, and keeps the full scan otherwise.

Pure: numpy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ProjectedUnitIndex"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class ProjectedUnitIndex:
    """The unit centroids projected onto ``dims`` leading directions (contiguous float32).

    Logits are similarities divided by ``temperature``.
    """

    def __init__(self, centroids: FloatArray, temperature: float, dims: int) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.temperature = np.float32(temperature)
        _, _, directions = np.linalg.svd(self.centroids.astype(np.float64), full_matrices=False)
        self.basis = np.ascontiguousarray(directions[:dims].T, dtype=np.float32)  # d x dims
        self.projected = np.ascontiguousarray(self.centroids @ self.basis)  # units x dims
        self.correction = np.zeros(len(centroids), dtype=np.float32)

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    def projected_logits(self, queries: FloatArray) -> FloatArray:
        """Each query's logit for every unit in the projected space, corrected."""
        logits = (queries @ self.basis) @ self.projected.T
        logits /= self.temperature
        logits += self.correction
        return logits

    def fit_correction(self, queries: FloatArray, skip: int = 8) -> None:
        """Set each unit's correction so that, over ``queries`` (unit rows) that do not score
        it among their ``skip`` best, its estimated softmax weight equals its exact weight
        on average (a log-mean-exp of the logits' differences)."""
        self.correction[:] = 0
        exact = (queries @ self.centroids.T) / self.temperature
        projected = self.projected_logits(queries)
        gap = exact - projected
        far = np.ones(gap.shape, dtype=bool)
        if gap.shape[1] > skip:
            near = np.argpartition(projected, gap.shape[1] - skip, axis=1)[:, -skip:]
            np.put_along_axis(far, near, False, axis=1)
        counted = far.sum(axis=0)
        masked = np.where(far, gap, -np.inf)
        top = masked.max(axis=0)
        top = np.where(np.isfinite(top), top, 0.0)
        mean = np.exp(masked - top).sum(axis=0) / np.maximum(counted, 1)
        with np.errstate(divide="ignore"):
            correction = np.where(counted > 0, top + np.log(mean), 0.0)
        self.correction[:] = correction

    def logits(
        self,
        queries: FloatArray,
        rerank: int,
        replaced: tuple[IntArray, FloatArray] | None = None,
    ) -> FloatArray:
        """Each query's logit for every unit: exact for its ``rerank`` best units in the
        projected space, the corrected projected logit for the others. With ``replaced`` =
        (units, centroids), unit ``units[i]`` has centroid ``centroids[i]`` for query ``i``
        (projected and exact alike)."""
        out = self.projected_logits(queries)
        units = out.shape[1]
        rerank = min(rerank, units)
        if replaced is not None:
            own, centroids = replaced
            rows = np.arange(len(queries))
            projected = np.einsum("ij,ij->i", queries @ self.basis, centroids @ self.basis)
            out[rows, own] = projected / self.temperature + self.correction[own]
        best = np.argpartition(out, units - rerank, axis=1)[:, units - rerank :]
        if replaced is not None:
            exact = np.matmul(self.centroids[best], queries[:, :, None])[:, :, 0]
            mine = best == own[:, None]
            exact[mine] = np.einsum("ij,ij->i", queries, centroids)[np.nonzero(mine)[0]]
            np.put_along_axis(out, best, exact / self.temperature, axis=1)
            return out
        if len(queries) == 1:
            exact = self.centroids[best[0]] @ queries[0]
            out[0, best[0]] = exact / self.temperature
            return out
        exact = np.matmul(self.centroids[best], queries[:, :, None])[:, :, 0]
        np.put_along_axis(out, best, exact / self.temperature, axis=1)
        return out
