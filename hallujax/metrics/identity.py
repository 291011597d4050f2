"""Face identity metrics on embeddings: similarity, verification and identification.

* ``cosine_similarity``: per pair, e.g. between the embeddings of
  hallucinated and ground-truth faces (paper 000 reports it as "Deg.").
* Verification from pair scores (higher = same identity) and pair labels:
  ``roc_curve``, ``roc_auc``, ``verification_rate_at_far`` (VR at FAR = 1% and
  0.1%, papers 000 and 001), ``best_threshold_accuracy`` (LFW-style accuracy on
  the pairs themselves) and ``ten_fold_accuracy`` (LFW's 10-fold protocol, paper 003's tables).
* Identification with one gallery image per identity and the hallucinated
  faces as probes (papers 001, 002, 004): ``identification_rates`` gives
  Rank-1 / Rank-5 (``identification_rates_from_scores`` for any score matrix,
  e.g. fused scores).
* ``fused_distance``: PCFH's score fusion (paper 001 §4): the mean of the
  distance between the original pair and the distance between the generated
  pair.

All functions take jax or numpy arrays and are jitted; they run on whole
evaluation sets (thousands of pairs) at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def l2_normalize(embeddings: jax.Array) -> jax.Array:
  embeddings = embeddings.astype(jnp.float32)
  return embeddings / jnp.maximum(jnp.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)


@jax.jit
def cosine_similarity(first: jax.Array, second: jax.Array) -> jax.Array:
  """Cosine similarity of matching rows of (N, D) and (N, D) -> (N,)."""
  return jnp.sum(l2_normalize(first) * l2_normalize(second), axis=-1)


@jax.jit
def cosine_similarity_matrix(first: jax.Array, second: jax.Array) -> jax.Array:
  """All cosine similarities between rows of (N, D) and (M, D) -> (N, M)."""
  return l2_normalize(first) @ l2_normalize(second).T


@jax.jit
def roc_curve(scores: jax.Array, same_identity: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(false accept rates, true accept rates, thresholds), accepting pairs with score >= threshold.

  One point per distinct score, thresholds descending, starting at (0, 0);
  like ``sklearn.metrics.roc_curve(drop_intermediate=False)``.
  """
  scores = scores.astype(jnp.float32)
  genuine = same_identity.astype(jnp.float32)
  order = jnp.argsort(-scores)
  sorted_scores, sorted_genuine = scores[order], genuine[order]
  true_accepts = jnp.cumsum(sorted_genuine)
  false_accepts = jnp.cumsum(1.0 - sorted_genuine)
  # Only the last of a run of tied scores is a valid operating point; others repeat its neighbour.
  last_of_tie = jnp.append(sorted_scores[1:] != sorted_scores[:-1], True)
  true_accepts = jnp.where(last_of_tie, true_accepts, jnp.nan)
  false_accepts = jnp.where(last_of_tie, false_accepts, jnp.nan)
  tar = jnp.concatenate([jnp.zeros(1), true_accepts / jnp.maximum(jnp.sum(genuine), 1.0)])
  far = jnp.concatenate([jnp.zeros(1), false_accepts / jnp.maximum(jnp.sum(1.0 - genuine), 1.0)])
  thresholds = jnp.concatenate([jnp.full(1, jnp.inf), sorted_scores])
  return far, tar, thresholds


@jax.jit
def roc_auc(scores: jax.Array, same_identity: jax.Array) -> jax.Array:
  """Area under the ROC curve: P(genuine score > impostor score) + ½·P(equal) (Mann-Whitney U)."""
  scores = scores.astype(jnp.float32)
  genuine = same_identity.astype(bool)
  # Mid-ranks handle ties: the rank of each score averaged over its tie group.
  sorted_scores = jnp.sort(scores)
  below = jnp.searchsorted(sorted_scores, scores, side="left")
  at_or_below = jnp.searchsorted(sorted_scores, scores, side="right")
  mid_ranks = (below + at_or_below + 1) / 2.0
  # In float32 and as a mean rank: positives × negatives overflows int32 at an evaluation's million pairs.
  positives = jnp.sum(genuine).astype(jnp.float32)
  negatives = scores.shape[0] - positives
  mean_rank = jnp.sum(jnp.where(genuine, mid_ranks, 0.0)) / positives
  return (mean_rank - (positives + 1.0) / 2.0) / negatives


@functools.partial(jax.jit, static_argnames=("false_accept_rate",))
def verification_rate_at_far(scores: jax.Array, same_identity: jax.Array, false_accept_rate: float) -> jax.Array:
  """Fraction of genuine pairs accepted at the strictest threshold whose FAR is <= `false_accept_rate`.

  The threshold is the k-th highest impostor score with k = floor(FAR · impostors);
  pairs scoring strictly above it are accepted, so at most k impostors are.
  """
  scores = scores.astype(jnp.float32)
  genuine = same_identity.astype(bool)
  impostor_scores = jnp.sort(jnp.where(genuine, -jnp.inf, scores))[::-1]  # descending, genuine last
  impostors = jnp.sum(~genuine)
  allowed = jnp.floor(false_accept_rate * impostors).astype(jnp.int32)
  threshold = impostor_scores[jnp.minimum(allowed, scores.shape[0] - 1)]
  accepted = jnp.sum(genuine & (scores > threshold))
  return accepted / jnp.maximum(jnp.sum(genuine), 1)


@jax.jit
def best_threshold_accuracy(scores: jax.Array, same_identity: jax.Array) -> jax.Array:
  """Verification accuracy at the best threshold on these pairs (LFW protocol without the 10 folds)."""
  far, tar, _ = roc_curve(scores, same_identity)
  genuine = jnp.sum(same_identity.astype(jnp.float32))
  impostors = same_identity.shape[0] - genuine
  accuracy = (tar * genuine + (1.0 - far) * impostors) / same_identity.shape[0]
  return jnp.nanmax(accuracy)


@functools.partial(jax.jit, static_argnames=("ranks",))
def identification_rates(probe_embeddings: jax.Array, probe_identities: jax.Array,
                         gallery_embeddings: jax.Array, gallery_identities: jax.Array,
                         ranks: tuple[int, ...] = (1, 5)) -> dict[int, jax.Array]:
  """Rank-k identification rates of probes against a gallery with one image per identity (cosine)."""
  similarity = cosine_similarity_matrix(probe_embeddings, gallery_embeddings)
  return identification_rates_from_scores(similarity, probe_identities, gallery_identities, ranks)


@functools.partial(jax.jit, static_argnames=("ranks",))
def identification_rates_from_scores(scores: jax.Array, probe_identities: jax.Array,
                                     gallery_identities: jax.Array,
                                     ranks: tuple[int, ...] = (1, 5)) -> dict[int, jax.Array]:
  """Rank-k rates from a (probes, gallery) score matrix, higher = more alike.

  A probe counts at rank k when fewer than k gallery identities score strictly
  higher than its own. Probes whose identity is not in the gallery count as misses.
  """
  is_own = probe_identities[:, None] == gallery_identities[None, :]
  own_score = jnp.max(jnp.where(is_own, scores, -jnp.inf), axis=1)
  higher = jnp.sum(scores > own_score[:, None], axis=1)
  in_gallery = jnp.any(is_own, axis=1)
  return {k: jnp.mean(in_gallery & (higher < k)) for k in ranks}


def ten_fold_accuracy(scores: np.ndarray, same_identity: np.ndarray, folds: int = 10) -> tuple[float, float]:
  """LFW's protocol: the threshold is chosen on 9 folds of pairs, accuracy measured on the 10th.

  Returns the mean and standard deviation of the 10 held-out accuracies.
  """
  scores, same_identity = np.asarray(scores), np.asarray(same_identity, bool)
  fold_of = np.arange(len(scores)) % folds
  accuracies = []
  for fold in range(folds):
    train, test = fold_of != fold, fold_of == fold
    ordered = np.unique(scores[train])
    candidates = np.concatenate([ordered[:1] - 1.0, (ordered[:-1] + ordered[1:]) / 2.0, ordered[-1:] + 1.0])
    train_accuracy = [np.mean((scores[train] > t) == same_identity[train]) for t in candidates]
    threshold = candidates[int(np.argmax(train_accuracy))]   # midway between two scores, as LFW's grids
    accuracies.append(np.mean((scores[test] > threshold) == same_identity[test]))
  return float(np.mean(accuracies)), float(np.std(accuracies))


@jax.jit
def fused_distance(original_distance: jax.Array, generated_distance: jax.Array) -> jax.Array:
  """PCFH score fusion (paper 001): mean of the original-pair and the generated-pair distances."""
  return (original_distance + generated_distance) / 2.0


def verification_summary(scores: jax.Array, same_identity: jax.Array) -> dict[str, jax.Array]:
  """AUC, best-threshold accuracy and VR at FAR = 1% and 0.1% for one set of scored pairs."""
  return {
      "auc": roc_auc(scores, same_identity),
      "accuracy": best_threshold_accuracy(scores, same_identity),
      "vr_at_far_1e-2": verification_rate_at_far(scores, same_identity, 1e-2),
      "vr_at_far_1e-3": verification_rate_at_far(scores, same_identity, 1e-3),
  }
