"""Federated training (paper 000, §3.2): client partitions, FedAvg / FedProx / MPR, and the Flower apps.

* ``partition``   Dirichlet(α) client partitions over a stated label, per site (institution).
* ``aggregation`` FedAvg (Eq. 8), the MPR term (Eq. 9), FedProx's proximal term, optimizer state
                  between rounds. One implementation, used by the one-program method
                  (``hallujax.methods.vpfl``) and by the Flower ServerApp / ClientApp.
* ``flower``      the Flower apps (``flwr``, the Message API): ``python -m hallujax.federated.flower``.
"""
