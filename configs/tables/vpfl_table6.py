"""Paper 000 (VPFL) Table 6 on the face world: federated thermal → visible, one client per institution.

The paper's sub-tables are the VIS-TH and ARL-VTF test sets and their average; here "site0" and "site1"
are the face world's two institutions (two thermal sensors, one client each, so each client sees one sensor
only: non-IID), and the unprefixed columns average both. Local Only is shown for both clients (C1, C2:
their models on both sites' test sets), Fused is the mean output of the local models. PSNR columns come
from the method's own evaluation; Rank-1 / identity cosine from the independent recognizer, where the
run's evaluate rows have them (the models that make one image per input).
Budget: the drift variant (16² → 64², 2 clients × 120 steps of batch 4, rounds of P = 40 local steps) on Table 5's
face world (data.uniform_appearance) with Table 5's prior, chosen
so that clients drift apart within a round (issue 32: with 8 IID-ish clients and P = 10 MPR carried under 0.6% of
the loss and the federated rows agreed to 0.001 dB). One seed measured (docs/vpfl.md): client_drift 0.42-0.54
with MPR and 0.8-3.9 without, MPR's share 1.6-2.2% of the loss at the paper's λd (random frozen networks, default
face world). On this face world with the prior and ArcFace (one seed, 1,200-step prior, docs/vpgan.md): VPFL's
client_drift 0.21-0.32, MPR's share 1.5-3.5%, its outputs' diversity 0.48 of the targets' (26% nearest one
target): just under outputs_vary's 0.5. With the 6,000-step prior (docs/results/vpfl_table6.md): every
check passes on seeds 0-1 (diversity 0.65-0.67, MPR 5.5% of the loss, client_drift 0.96 without MPR); at seeds 0-4
of the MPR comparison's rows, seed 3 fails outputs_vary in both (diversity 0.49) and outputs_follow_inputs in VPFL
(7 × chance), so that comparison is invalid at this budget. Table 5's prior is now the 30,000-step one (issue 32: the
6,000-step prior fails the prior check on 512 samples, 0.38; the 30,000-step passes, 0.94; docs/vpgan.md). With it
(seed 0, docs/results/vpfl_table6.md) every federated comparison is invalid: VPFL's outputs reach 0.48 of the
targets' diversity and follow their inputs at 9 × chance, FedProx's at 7 × (the check asks 10 ×), while Centralized,
one model on both sites for the same 120 steps, passes (0.58, 22 ×) and MPR (6.6% of the loss) and the drift (0.86)
are alive. Each client here trains 120 steps of batch 4 where Table 5's VPGAN rows train 300: the next budget to try.
"""

from configs.tables import RECOGNIZER_64
from configs.tables.vpgan_table5 import PREREQUISITES, PRIOR_STEPS, WEIGHTS, WORLD
from hallujax.experiments import (Row, Table, eval_step_at_least, outputs_follow_inputs,
                                 outputs_vary, row_gap_at_least)

SITES = ("psnr", "site0_psnr", "site1_psnr")
BASE = f"configs/vpfl.py:drift,{WORLD},{WEIGHTS}"   # Table 5's face world (data.uniform_appearance) and prior


def eval_step(prefix: str) -> tuple[tuple[str, str], ...]:
  return tuple((name, f"{prefix}{name}") for name in SITES)


def table() -> Table:
  local = f"{BASE},strategy=local_only"
  return Table(
      name="vpfl_table6",
      title="VPFL Table 6 on the face world: federated thermal → visible, one client per institution",
      paper="paper 000 §4.3, Table 6 (VIS-TH, ARL-VTF and their average)",
      budget="configs/vpfl.py:drift — 16² thermal → 64² visible, 2 clients (one per thermal sensor) × 120 steps "
             "of batch 4, rounds of P = 40 local steps, the 64² in-project prior of vpgan_table5 "
             f"({PRIOR_STEPS} steps)",
      prerequisites=PREREQUISITES,
      rows=(
          Row("Local Only C1", local, from_eval_step=eval_step("client0_")),
          Row("Local Only C2", local, from_eval_step=eval_step("client1_")),
          Row("Fused", local, from_eval_step=eval_step("fused_")),
          Row("FedProx", f"{BASE},strategy=fedprox"),
          Row("VPFL w/o MPR", f"{BASE},strategy=fedavg"),
          Row("VPFL", BASE),
          Row("Centralized", f"{BASE},strategy=centralized"),
          Row("ground truth (ceiling)", BASE, column="target"),
      ),
      metrics=(*SITES, "rank1", "vr_at_far_1e-2", "identity_cosine"),
      order=("Centralized", "VPFL", "VPFL w/o MPR", "FedProx", "Fused"),
      order_metric="psnr",
      recognizer=RECOGNIZER_64,
      # The per-site PSNRs of the federated rows are VPFL's own eval_step means (evaluate's rows average both sites).
      eval_step_metrics=("site0_psnr", "site1_psnr"),
      checks=(
          outputs_vary(min_ratio=0.5),   # 8 of 9 federated runs at exactly 17/1024 Rank-1 was one face (issue 26)
          outputs_follow_inputs(),   # each output follows its own input, not noise: every method row
          # MPR is alive: its share of a client's generator loss; below 5% "VPFL vs VPFL w/o MPR" compares
          # one model with itself.
          eval_step_at_least("mpr_loss_share", 0.05, "MPR carries a visible share of the loss", rows=("VPFL",)),
          # Something for MPR to correct: client encoders drift from the global model's (non-IID sites). The bound
          # is "above zero" in the units of VPFL's client_drift (mean feature distance).
          eval_step_at_least("client_drift", 1e-3, "the clients drift from the global model",
                             rows=("VPFL w/o MPR",)),
          # No prior_draws_faces here: every row decodes through the same frozen prior, and no comparison of this
          # table is about the prior (as in Table 5, where the check concerns the w/o VP row only). The prior's
          # own check is Table 5's.
          row_gap_at_least("ground truth (ceiling)", "VPFL", "rank1", 0.1, "headroom under the ground truth"),
      ),
      notes=("ground truth (ceiling): the visible ground truth through the same recognizer and gallery.",
             "client_drift is relative: the distance of the clients' codes from the round's global codes divided by "
             "the global codes' size, measured on the clients just before Eq. 8 averages them (VPFL's eval_step); "
             "Local Only, Fused and Centralized have no round and report neither it nor mpr_loss_share.",
             "the prior: every row decodes through Table 5's frozen prior, so its face rate (Table 5's "
             "prior_draws_faces check) bounds every row alike and decides no comparison here.",
             "data.uniform_appearance (as Table 5): what a thermal image cannot show (light, background, shirt, skin, "
             "hair, eye and lip colour) is the same for every face, so the thermal input determines the visible "
             "target; on the default face world predictors that read the thermal input reach only 0.25-0.40 of the "
             "targets' diversity and every row failed outputs_vary by construction (docs/vpgan.md)."),
  )
