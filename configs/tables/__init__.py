"""Results tables for ``python -m hallujax.experiments TABLE``: one file per table, ``def table() -> Table``."""

# The independent recognizer of the identity tables at their outputs' size (64²), so that identity is scored on
# the images the methods produce rather than on a 32² copy (configs/arcface.py's "recognizer" variant is 32²).
# Trained once under ROOT/runs/ like any row, and never by the methods it scores. Measured once (seed 0, 1,500
# steps, 512 held-out faces of its 200 identities): class accuracy 0.785 at 64² vs 0.734 at 32²; it trains in about
# 22 minutes on 2 busy CPU cores against 6 for the 32² one.
RECOGNIZER_64 = "configs/arcface.py:recognizer,data.target_size=64"

# A "visible share" of the generator's loss for a regularizer the table ablates: below 5% its row is the
# ablated row in all but name (issue 26: PCFH's λ5 term carried 1e-4 of the loss).
VISIBLE_LOSS_SHARE = 0.05

# The identity loss network of the methods that train with one (VPGAN's λc term, VividGAN's Φ in L_id): an
# in-project ArcFace on the face world's first 64 identities at 32², trained once as a prerequisite. It is a
# training input, never the table's recognizer (RECOGNIZER_64 is another run, of other identities' images).
ARCFACE_LOSS_NETWORK = ("arcface", "configs/arcface.py:smoke,data.num_identities=64,train.steps=1500,"
                                   "train.eval_every=500,train.checkpoint_every=500")
