"""Paper 002 (VividGAN) Table III on the face world: the loss ablation, one trained model per row.

The paper's rows add one loss each (§V-D): L⁻_G (L_mse, L_h) 22.945 / 0.773, L†_G (+ L_id)
23.981 / 0.798, L‡_G (+ L_sys) 25.057 / 0.804, L⋆_G (+ Coarse-D's L^c_adv) 26.128 / 0.885 and L_G
(+ Fine-D's L^f_adv) 26.965 / 0.893 (CelebA, PSNR / SSIM). Here each row is a run of
configs/vividgan.py:fig8 (8² -> 32², ×4, the paper's discrete yaw set, tiny networks, the three
stages in one run, a 500-step stage (iii)) with config.loss.terms set, for training and evaluation alike.

Why fig8 and not tiny: Table III's rows differ in losses of the fine stage, which first trains in stage
(iii) (§III-E). After tiny's 120 joint steps the fine network had barely learnt (Fig. 8: it added 0.01–0.37
dB over the coarse face), so the rows compared untrained fine stages; at tiny L_sys cost 0.57 dB. fig8's
500 joint steps are Fig. 8's budget (configs/tables/vividgan_fig8.py), where the fine stage uses its prior.
"""

from configs.tables import ARCFACE_LOSS_NETWORK, VISIBLE_LOSS_SHARE
from hallujax.experiments import (Row, Table, eval_step_at_least, outputs_follow_inputs, outputs_vary,
                                 row_gap_at_least)

# Φ of L_id (Eq. 5) is an in-project ArcFace trained once on the face world (no ImageNet ResNet-50 can be
# downloaded here); the tiny (and fig8) targets are mirror-symmetric scenes (configs/vividgan.py: data.symmetric_frontal).
BASE = "configs/vividgan.py:fig8,weights.recognizer={arcface}"


def table() -> Table:
  return Table(
      name="vividgan_table3",
      title="VividGAN Table III on the face world (loss ablation, ×4 at 32²)",
      paper="paper 002 §V-D, Table III (CelebA 16² → 128²: L⁻_G 22.945 / 0.773, L†_G 23.981 / 0.798, "
            "L‡_G 25.057 / 0.804, L⋆_G 26.128 / 0.885, L_G 26.965 / 0.893)",
      budget="configs/vividgan.py:fig8 — 8² → 32² frontalization, yaw from the paper's ±15…±90° set, "
             "tiny networks, stages of 240 coarse / 200 touching-up / 500 joint steps at batch 8",
      rows=(
          Row("L⁻_G (L_mse, L_h)", f"{BASE},loss.terms=mse_h"),
          Row("L†_G (+ L_id)", f"{BASE},loss.terms=identity"),
          Row("L‡_G (+ L_sys)", f"{BASE},loss.terms=symmetry"),
          Row("L⋆_G (+ L^c_adv)", f"{BASE},loss.terms=coarse_adversarial"),
          Row("L_G (+ L^f_adv)", BASE),
          Row("bicubic (floor)", BASE, column="bicubic"),
      ),
      metrics=("psnr", "ssim", "landmark_error_coarse", "identity_loss_share", "symmetry_loss_share",
               "coarse_adversarial_loss_share", "fine_adversarial_loss_share"),
      order=("L_G (+ L^f_adv)", "L⋆_G (+ L^c_adv)", "L‡_G (+ L_sys)", "L†_G (+ L_id)", "L⁻_G (L_mse, L_h)"),
      order_metric="psnr",
      eval_examples=512,
      recognizer="",
      prerequisites=(ARCFACE_LOSS_NETWORK,),
      eval_step_metrics=("landmark_error_coarse", "identity_loss_share", "symmetry_loss_share",
                         "coarse_adversarial_loss_share", "fine_adversarial_loss_share"),
      checks=(
          outputs_vary(min_ratio=0.5),
          outputs_follow_inputs(),   # each output follows its own input, not noise: every method row
          row_gap_at_least("L_G (+ L^f_adv)", "bicubic (floor)", "psnr", 0.5, "the full model above the floor"),
          # Each row's added loss is alive: its weighted share of L_G (Eq. 12) on held-out batches (VividGAN's
          # eval_step, loss_shares). A dead loss makes only its own row's comparison with the row before
          # meaningless ("against"), not the next row's, which is about another loss.
          *(eval_step_at_least(f"{loss}_loss_share", VISIBLE_LOSS_SHARE, f"{name} carries a visible share of L_G",
                               rows=(row,), against=previous)
            for loss, name, row, previous in (
                ("identity", "L_id", "L†_G (+ L_id)", "L⁻_G (L_mse, L_h)"),
                ("symmetry", "L_sys", "L‡_G (+ L_sys)", "L†_G (+ L_id)"),
                ("coarse_adversarial", "L^c_adv", "L⋆_G (+ L^c_adv)", "L‡_G (+ L_sys)"),
                ("fine_adversarial", "L^f_adv", "L_G (+ L^f_adv)", "L⋆_G (+ L^c_adv)"))),
      ),
      notes=("L_id's Φ is the `{arcface}` prerequisite's embedding network (an in-project ArcFace on the face "
             "world's identities, frozen): no ImageNet ResNet-50 weights can be downloaded here.",
             "*_loss_share: the row's added loss, weighted as in Eq. 9 / 11 (λ = 0.01 for L_id and both L_adv, 1 for "
             "L_sys: the paper's), over L_G = L_C + L_T + L_F on held-out batches. Every term is a mean over its "
             "elements (the paper's squared Frobenius norms, scaled), so L_id's share depends on Φ's feature "
             "scale: the paper's λ = 0.01 was set for ResNet-50's 2,048 average-pooled features, not for this Φ.",
             "L_sys assumes a symmetric frontal face: the tiny and fig8 configs render mirror-symmetric frontal targets "
             "(data.symmetric_frontal; their own L_sys is 0.0008 against 0.058 without it, docs/vividgan.md).",
             "landmark_error_coarse: the landmark estimator's mean error on the coarse face, in pixels of 32².",
             "Per-yaw PSNR / SSIM of these runs: python -m hallujax.tools.vividgan_yaw --workdir RUN ..."),
  )
