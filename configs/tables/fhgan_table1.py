"""Paper 003 (FH-GAN) Table 1 on the face world: DSNet with vs without the identity loss.

The paper (LFW / CFP, 10-fold verification accuracy of ArcFace on the super-resolved faces): the
identity loss raises verification accuracy. Here verification accuracy is LFW's 10-fold protocol over
up to 3,000 genuine + 3,000 impostor (output, ground truth) pairs of held-out faces, scored by a
recognizer FH-GAN never trained with (the method's own jointly trained ArcFace is not used to judge it).
Budget: the smoke variant (16² → 64², 900 steps of batch 8: 700 pixel-loss pretraining, 200 joint).
"""

from hallujax.experiments import Row, Table

BASE = "configs/fhgan.py:smoke"


def table() -> Table:
  return Table(
      name="fhgan_table1",
      title="FH-GAN Table 1 on the face world: the identity loss",
      paper="paper 003 §4.2, Table 1 (verification accuracy on LFW / CFP, with and without L_id)",
      budget="configs/fhgan.py:smoke — 16² → 64², 900 steps of batch 8 (700 pixel pretraining + 200 joint "
             "with WGAN-GP and ArcFace), not the paper's protocol (configs/fhgan.py says how the paper's run differs)",
      rows=(
          Row("bilinear", BASE, column="bilinear"),
          Row("bicubic", BASE, column="bicubic"),
          Row("FH-GAN w/o identity loss", f"{BASE},loss.identity=0.0"),
          Row("FH-GAN", BASE),
      ),
      metrics=("verification_accuracy", "rank1", "identity_cosine", "psnr", "ssim"),
      order=("FH-GAN", "FH-GAN w/o identity loss"),
      order_metric="verification_accuracy",
  )
