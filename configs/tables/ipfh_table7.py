"""Paper 004 (IPFH) Table VII on the face world: patch selection strategies, each its own trained model.

The paper trains one model per strategy ("At the training stage, we refined the patches with visual
loss Lv and identity loss Ls") and reports RL 26.42 / 0.80 > randomly (30 patches) 25.18 / 0.75 >
evenly (16 patches) 24.32 / 0.68 (CelebA, PSNR / SSIM). Here every row is a separate run of
configs/ipfh.py:table7_occlusion (64² faces from 16² with 6 occluded discs in each input, tiny networks, an R
pretrained 1,000 steps also on its own repairs, all four stages in one run) with config.policy.selection set for
training AND evaluation. With one seed all rows
share the same coarse network, cognition network and pretrained R (the stages before the policy stage
are deterministic given the seed), so the rows differ only in how the patches were chosen.

Rows beyond the paper's: "oracle" (greedy by the ground truth's gain from R, an upper bound no policy
can beat), "coarse ỹ only" and "bicubic" (the RL run's other image columns). The policy diagnostics
come from IPFH's own eval_step: policy_entropy (test-time, nats; log 4096 = 8.32 is uniform),
distinct_patches (of T per face) and identity_accuracy (the cognition network's held-out
identification of the ground truth, the same in every row of one seed).
"""

from hallujax.experiments import (Row, Table, eval_step_at_least, eval_step_at_most,
                                 outputs_follow_inputs, outputs_vary, row_gap_at_least)

# table7 with local degradations and an R that improves the patches it is given (issue 28, docs/ipfh.md "R alive" and
# "Room for choosing where"). On table7 the oracle was only +0.14 dB over ỹ, so no choice of locations could matter;
# on table7_local (shaded discs) R was dead (random −0.52 dB under ỹ); on table7_alive (shaded discs, R alive) the
# grid got most of the headroom (oracle − grid +0.28 dB). With the discs occluded, R gains where the face is hidden
# and not elsewhere: on the seed-0 / seed-1 prefixes grid +0.44 / +1.02, random +0.40 / +0.82, oracle +0.99 / +1.65 dB
# over ỹ, oracle − grid +0.55 / +0.64 dB (docs/ipfh.md "Room for choosing where"). Not the paper's data: the paper's faces are CelebA at ×8, with no occluders.
BASE = "configs/ipfh.py:table7_occlusion"
# The recipe with which the policy learned on table7_local (issue #28, docs/ipfh.md "A policy that learns"; none of
# it is the paper's default): a 64-cell action grid and a convolutional score head; r_s = L_p before − after the
# repair; each step credited with its own reward (γ = 0); the leave-one-out baseline with advantages normalized
# separately per step (r_l's spread is ~20× the r_s's); the context marking every repaired cell (§III-B.2's
# "context state memorizing the history action", our reading); a constant policy rate of 2·10⁻² (the paper's
# "10^-3 to 10^-5" left P where it started) for 200 policy steps; R updated once per batch, as measured. Measured as
# a policy stage on one table7_local prefix, two seeds, 64 test faces: held-out entropy fraction 0.83 / 0.72, 20
# distinct patches, +0.53 / +0.66 dB over random, −0.13 / −0.28 dB under the grid (not as this whole row's run).
# As this table's row on table7_occlusion (3 seeds, docs/ipfh.md): entropy fraction 0.88 / 0.92 / 0.83, 20 distinct
# patches, level with random (−0.01 ± 0.47 dB).
LEARNABLE = ("policy.selection=policy,policy.action_stride=8,policy.head=conv,policy.reward=improvement,"
             "policy.discount=0.0,policy.normalize_advantages=True,policy.normalize_per_step=True,"
             "policy.action_history=True,optim.policy.schedule=constant,optim.policy.learning_rate=0.02,"
             "stage_steps.policy=200,restoration.update_every=batch")


def table() -> Table:
  return Table(
      name="ipfh_table7",
      title="IPFH Table VII on the face world (patch selection strategies, ×4 at 64²)",
      paper="paper 004 §IV-C, Table VII (CelebA 16² → 128²: evenly 24.32 / 0.68, randomly 25.18 / 0.75, "
            "RL 26.42 / 0.80)",
      budget="configs/ipfh.py:table7_occlusion — 16² → 64² with 6 occluded discs in each LR input, T = 20 "
             "patches of 16² (grid 16, random 30), batch 8; coarse / cognition / R (64 channels, 1,000 steps, "
             "also on its own repairs, reading which pixels it repaired) / policy stages in one run",
      rows=(
          Row("RL", f"{BASE},policy.selection=policy"),
          Row("randomly (30)", f"{BASE},policy.selection=random"),
          Row("evenly (16)", f"{BASE},policy.selection=grid"),
          # R kept as pretrained in the oracle's policy stage (not the paper's fine-tuning; no paper row is an
          # oracle): fine-tuned on the oracle's own ground-truth picks, R lost half the headroom it measures
          # (issue 28, docs/ipfh.md: oracle − ỹ +0.89 → +0.43 dB on 64 test faces, seed 0).
          Row("oracle (upper bound)", f"{BASE},policy.selection=oracle,restoration.fine_tune=False"),
          Row("RL + learnability options", f"{BASE},{LEARNABLE}"),
          Row("coarse ỹ only", f"{BASE},policy.selection=policy", column="coarse"),
          Row("bicubic", f"{BASE},policy.selection=policy", column="bicubic"),
      ),
      metrics=("psnr", "ssim", "policy_entropy", "distinct_patches", "degraded_area_repaired",
               "repairs_on_degradation", "identity_accuracy"),
      # The paper's claim is about a policy that learned. With the paper's own settings ours stays at 99.8% of
      # uniform entropy (the "RL" row, shown with its failing check); the ordering is therefore decided with the
      # policy that did learn, and "RL" stays in the table as the record of the paper's settings.
      order=("RL + learnability options", "randomly (30)", "evenly (16)"),
      order_metric="psnr",
      eval_examples=256,
      recognizer="",
      eval_step_metrics=("policy_entropy", "distinct_patches", "degraded_area_repaired", "repairs_on_degradation",
                         "identity_accuracy"),
      checks=(
          outputs_vary(min_ratio=0.5),
          outputs_follow_inputs(),   # each output follows its own input, not noise: every method row
          # The RL row is a learned policy, not the arg-max of a near-uniform one (issue 26: 99.5% of uniform).
          # In every seed: a seed whose policy stayed uniform (the recipe's seed 6) compares a uniform arg-max
          # with random patches, and the mean over the other seeds would hide it.
          eval_step_at_most("policy_entropy_fraction", 0.9, "the policy left uniform",
                            rows=("RL", "RL + learnability options"), every_seed=True),
          # The greedy rollout spreads its T = 20 repairs: at least a quarter of them on different patches.
          eval_step_at_least("distinct_patches", 5.0, "the policy repairs different patches",
                             rows=("RL", "RL + learnability options"), every_seed=True),
          # A ceiling above the rows: choosing patches can matter only if repairing the best ones (the oracle)
          # adds PSNR over the coarse face; the rows compete inside that headroom.
          row_gap_at_least("oracle (upper bound)", "coarse ỹ only", "psnr", 0.5, "headroom for patch selection"),
          # ... and above the evenly spaced grid: otherwise where the patches go cannot beat repairing everywhere.
          row_gap_at_least("oracle (upper bound)", "evenly (16)", "psnr", 0.5, "headroom over the grid"),
          # R alive (issue 28): the patches a selection gives R come out better than ỹ's. The paper's rows all
          # beat its coarse result; on table7_local random and grid sat at ỹ's level (R improved a random patch
          # by +0.22 dB and undid it on a second repair), so the rows differed by noise (docs/ipfh.md "R alive").
          row_gap_at_least("randomly (30)", "coarse ỹ only", "psnr", 0.3, "R improves the patches it is given"),
          row_gap_at_least("evenly (16)", "coarse ỹ only", "psnr", 0.3, "R improves the patches it is given"),
      ),
      notes=("RL + learnability options: not a paper row; the policy with the recipe that learned in docs/ipfh.md "
             "(issue #28): 64 actions (entropy of log 64 = 4.16, not log 4096), per-step normalized leave-one-out "
             "advantages, the repaired cells in the context, policy lr 2·10⁻², 200 policy steps, R updated once "
             "per batch (the other rows: 40 policy steps, R updated after every step, the paper's).",
             "policy_entropy is 0 for the fixed selections; distinct_patches counts different patch "
             "corners among the T a face gets (16 for the grid; ≤ 20 for RL and the oracle; ≤ 30 random).",
             "degraded_area_repaired: the share of the occluded discs' area (the face world's degraded region, "
             "at 16² brought to 64²) inside at least one repaired patch (1 for the grid, which tiles the face); "
             "repairs_on_degradation: the share of the T repairs whose patch holds occluded area of at least 10% "
             "of its pixels (about a third of one disc; ipfh_rollout.ON_DEGRADATION_SHARE). Where the patches go, "
             "against where the input is damaged (issue 28).",
             "If the oracle is not above the grid, no choice of locations can win and the limit is R "
             "(docs/ipfh.md).",
             "oracle (upper bound): the pretrained R that every row starts from, kept as pretrained through the "
             "oracle's policy stage (restoration.fine_tune=False). With the paper's fine-tuning R trains on the "
             "oracle's own picks (made with the ground truth), which no row does, and the oracle fell from "
             "+0.89 to +0.43 dB over ỹ (issue 28, docs/ipfh.md). The other rows fine-tune R as the paper does, "
             "so the ceiling is the pretrained R's, not each row's own R's.",
             "identity_accuracy: the run's own SphereFace, trained in the cognition stage, identifying "
             "the held-out ground-truth faces (16 identities); it is stated, not an identity metric of the "
             "outputs."),
  )
