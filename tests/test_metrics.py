"""Image-quality metrics agree with scikit-image; identity metrics agree with their definitions."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hallujax.metrics import identity, image_quality


@pytest.fixture(scope="module")
def image_pairs():
  """Two 0-255 RGB images and distorted versions of them (noise and blur-like smoothing)."""
  rng = np.random.default_rng(0)
  base = rng.uniform(0, 255, (2, 40, 36, 3))
  base[1] = np.cumsum(base[1], axis=0) / np.arange(1, 41)[:, None, None]  # smooth structure
  distorted = np.clip(base + rng.normal(0, [[[[12.0]]], [[[30.0]]]], base.shape), 0, 255)
  return base.astype(np.float32), distorted.astype(np.float32)


@pytest.mark.parametrize("y_channel", [False, True])
def test_psnr_and_ssim_match_scikit_image(image_pairs, y_channel):
  references, images = image_pairs
  ours_psnr = np.asarray(image_quality.psnr(images, references, y_channel=y_channel))
  ours_ssim = np.asarray(image_quality.ssim(images, references, y_channel=y_channel))
  for index in range(len(images)):
    a, b = images[index].astype(np.float64), references[index].astype(np.float64)
    if y_channel:
      a, b = rgb2ycbcr(a / 255.0)[..., 0], rgb2ycbcr(b / 255.0)[..., 0]
    expected_psnr = peak_signal_noise_ratio(b, a, data_range=255)
    expected_ssim = structural_similarity(
        b, a, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=None if y_channel else -1)
    print(f"y={y_channel} image {index}: PSNR {ours_psnr[index]:.6f} vs skimage {expected_psnr:.6f}; "
          f"SSIM {ours_ssim[index]:.7f} vs skimage {expected_ssim:.7f}")
    assert abs(ours_psnr[index] - expected_psnr) < 1e-3
    assert abs(ours_ssim[index] - expected_ssim) < 1e-5
  assert ours_ssim[0] > ours_ssim[1] and ours_psnr[0] > ours_psnr[1]  # more noise scores worse


def test_unit_range_wrappers_and_size_errors(image_pairs):
  references, images = image_pairs
  to_unit = lambda x: x / 127.5 - 1.0
  np.testing.assert_allclose(image_quality.psnr_from_unit_range(to_unit(images), to_unit(references)),
                             image_quality.psnr(images, references), rtol=1e-4)
  np.testing.assert_allclose(image_quality.ssim(references, references), 1.0, atol=1e-6)
  with pytest.raises(ValueError, match="at least 11x11"):
    image_quality.ssim(images[:, :8, :8], references[:, :8, :8])
  with pytest.raises(ValueError, match="need RGB"):
    image_quality.psnr(images[..., :1], references[..., :1], y_channel=True)


def brute_force_auc(scores, genuine):
  positive, negative = scores[genuine], scores[~genuine]
  greater = (positive[:, None] > negative[None, :]).mean()
  equal = (positive[:, None] == negative[None, :]).mean()
  return greater + 0.5 * equal


def test_roc_auc_and_curve_match_definitions():
  rng = np.random.default_rng(1)
  genuine = rng.uniform(size=300) < 0.3
  scores = np.round(rng.normal(genuine * 1.0, 1.0), 1).astype(np.float32)  # rounding makes ties
  auc = float(identity.roc_auc(scores, genuine))
  assert abs(auc - brute_force_auc(scores, genuine)) < 1e-5
  far, tar, thresholds = (np.asarray(x) for x in identity.roc_curve(scores, genuine))
  keep = ~np.isnan(far)
  far, tar, thresholds = far[keep], tar[keep], thresholds[keep]
  for f, t, threshold in zip(far[1:], tar[1:], thresholds[1:]):
    assert np.isclose(f, np.mean(scores[~genuine] >= threshold)) and np.isclose(t, np.mean(scores[genuine] >= threshold))
  assert abs(np.trapezoid(tar, far) - auc) < 1e-5


def test_verification_rate_at_far_and_accuracy():
  # 1000 impostors with scores 0..999 (/1000); genuine pairs at known places.
  impostor = np.arange(1000) / 1000.0
  genuine_scores = np.array([0.9995, 0.9985, 0.995, 0.5, 0.1])
  scores = np.concatenate([impostor, genuine_scores]).astype(np.float32)
  labels = np.concatenate([np.zeros(1000, bool), np.ones(5, bool)])
  # FAR 0.1% allows 1 impostor above the threshold: threshold is 0.998 -> genuine 0.9995 and 0.9985 pass.
  assert float(identity.verification_rate_at_far(scores, labels, 1e-3)) == pytest.approx(2 / 5)
  # FAR 1% allows 10 impostors: threshold 0.989 -> three genuine pass.
  assert float(identity.verification_rate_at_far(scores, labels, 1e-2)) == pytest.approx(3 / 5)
  summary = identity.verification_summary(scores, labels)
  # Best threshold 0.9985: 2 genuine accepted, 1 impostor (0.999) accepted -> 1001 of 1005 right.
  assert float(summary["accuracy"]) == pytest.approx(1001 / 1005)
  separable = identity.verification_summary(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))
  assert float(separable["auc"]) == 1.0 and float(separable["vr_at_far_1e-3"]) == 1.0


def test_identification_ranks_and_similarity():
  gallery = np.eye(6, 8, dtype=np.float32)  # identities 10..15, one image each
  gallery_identities = np.arange(10, 16)
  probes = np.stack([
      gallery[0] * 3,                     # identity 10, exact: rank 1
      gallery[1] + 0.9 * gallery[2],      # identity 11, best match: rank 1
      gallery[2] + 1.1 * gallery[3],      # identity 12, second best: rank 2
      np.ones(8, np.float32) - gallery[4] * 0.999,  # identity 14, last of six: rank 6
  ])
  probe_identities = np.array([10, 11, 12, 14])
  rates = identity.identification_rates(probes, probe_identities, gallery, gallery_identities, ranks=(1, 2, 5))
  assert float(rates[1]) == pytest.approx(2 / 4)
  assert float(rates[2]) == pytest.approx(3 / 4)
  assert float(rates[5]) == pytest.approx(3 / 4)
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
  expected = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
  np.testing.assert_allclose(identity.cosine_similarity(a, b), expected, rtol=1e-5)
  np.testing.assert_allclose(identity.fused_distance(np.array([0.2, 0.4]), np.array([0.6, 0.0])), [0.4, 0.2])


def test_ten_fold_accuracy_picks_the_threshold_on_the_other_folds():
  rng = np.random.default_rng(3)
  same = rng.random(600) < 0.5
  # Separable scores: every held-out fold is classified perfectly by a threshold from the other nine.
  separable = np.where(same, rng.uniform(0.6, 1.0, 600), rng.uniform(-1.0, 0.4, 600))
  assert identity.ten_fold_accuracy(separable, same) == (1.0, 0.0)
  # Scores unrelated to the labels: about chance, never the optimistic best-threshold accuracy on the same pairs.
  noise = rng.normal(size=600)
  mean, spread = identity.ten_fold_accuracy(noise, same)
  assert 0.4 < mean < 0.6 and spread > 0
  assert mean < float(identity.best_threshold_accuracy(noise, same))


def test_fused_scores_rank_like_paper_001():
  # Two probes of identities 0 and 1; the generated image alone ranks probe 1 wrong, the original
  # NIR pair alone ranks probe 0 wrong; their mean (PCFH's fusion) ranks both right.
  generated = np.array([[0.9, 0.1], [0.6, 0.5]])
  original = np.array([[0.4, 0.5], [0.1, 0.9]])
  identities = np.array([0, 1])
  rank1 = lambda scores: float(identity.identification_rates_from_scores(scores, identities, identities, (1,))[1])
  assert rank1(generated) == 0.5 and rank1(original) == 0.5
  assert rank1((generated + original) / 2) == 1.0


def test_roc_auc_at_an_evaluations_million_pairs_matches_mann_whitney():
  from scipy.stats import mannwhitneyu
  rng = np.random.default_rng(4)
  same = rng.random(1_000_000) < 0.05            # 50k genuine × 950k impostor pairs: beyond int32 when multiplied
  scores = np.where(same, rng.normal(0.5, 1.0, same.size), rng.normal(0.0, 1.0, same.size)).astype(np.float32)
  expected = mannwhitneyu(scores[same], scores[~same]).statistic / (same.sum() * (~same).sum())
  assert float(identity.roc_auc(scores, same)) == pytest.approx(expected, abs=1e-4)
