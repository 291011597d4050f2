"""Client partitions: which examples of a split each federated client reads.

Paper 000 §4.1: "Two training sets are further split into 4 subsets by sampling
from a Dirichlet distribution (α=0.3) to simulate heterogeneous data
distribution in the FL scheme, resulting in 8 independent clients". The paper
does not say over which label the Dirichlet draw is made; we take the usual
label-skew partition (Hsu et al. 2019; NIID-Bench, Li et al. 2022): for every
value c of the stated label, proportions p_c ~ Dir(α·1_K) over the K clients of
a site, and the site's examples with label c are dealt out in those
proportions. The draw is repeated (with the same generator, so it stays a
function of the seed) until every client holds at least ``min_size`` examples.

Sites (the paper's institutions) are contiguous blocks of the split: with S
sites, example i belongs to site ⌊i·S/N⌋ (the face world renders each site's
block with its own thermal sensor: ``data.thermal_sensors``). The K clients are
split evenly over the sites, client k in site ⌊k·S/K⌋.

Config (``config.data``): ``clients`` K, ``client_partition="dirichlet"`` and
``partition = dict(alpha, label, min_size, seed)``. The Dirichlet partition is
drawn for the train split; the validation and test splits are each site's
held-out set, dealt evenly (interleaved) to the site's clients, so an
evaluation over all clients' batches covers both sites' test sets and can be
reported per site.
"""

from __future__ import annotations

import numpy as np

MAX_DRAWS = 1000


def site_of_index(index: np.ndarray, length: int, sites: int) -> np.ndarray:
  """The site (institution) of example `index` in a split of `length` examples: contiguous blocks."""
  return (np.asarray(index, np.int64) * sites) // length


def site_count(data_config) -> int:
  """S: one site per face-world thermal sensor (data.thermal_sensors), else data.sites (default 1)."""
  return max(1, len(data_config.thermal_sensors) or int(data_config.sites))


def site_of_client(client: int, clients: int, sites: int) -> int:
  return (client * sites) // clients


def check_layout(clients: int, sites: int) -> None:
  if sites < 1 or clients < sites or clients % sites:
    raise ValueError(f"config.data.clients={clients} does not split evenly over {sites} sites; use a multiple "
                     f"of {sites} (the paper: 2 institutions × 4 clients).")


def dirichlet_partition(labels: np.ndarray, clients: int, alpha: float, seed: int,
                        min_size: int = 1) -> list[np.ndarray]:
  """Indices into `labels` for each of `clients` clients, label skew from Dir(α) (see module doc).

  Deterministic for a seed. Raises if no draw in MAX_DRAWS gives every client `min_size` examples.
  """
  labels = np.asarray(labels)
  if alpha <= 0:
    raise ValueError(f"Dirichlet α={alpha}; expected α > 0 (the paper: 0.3; smaller is more skewed).")
  if clients * min_size > len(labels):
    raise ValueError(f"{len(labels)} examples cannot give {clients} clients at least min_size={min_size} each.")
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  for _ in range(MAX_DRAWS):
    shares: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for value in classes:
      members = rng.permutation(np.flatnonzero(labels == value))
      proportions = rng.dirichlet(np.full(clients, float(alpha)))
      cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
      for client, part in enumerate(np.split(members, cuts)):
        shares[client].append(part)
    partition = [np.sort(np.concatenate(parts)) for parts in shares]
    if min(len(p) for p in partition) >= min_size:
      return partition
  raise ValueError(f"No Dirichlet(α={alpha}) draw in {MAX_DRAWS} gave each of {clients} clients "
                   f"min_size={min_size} of {len(labels)} examples; lower min_size or raise α.")


def sited_dirichlet_partition(labels: np.ndarray, clients: int, sites: int, alpha: float, seed: int,
                              min_size: int = 1) -> list[np.ndarray]:
  """Dirichlet partitions of each site's block among that site's clients (indices into the split)."""
  check_layout(clients, sites)
  per_site = clients // sites
  site = site_of_index(np.arange(len(labels)), len(labels), sites)
  partition = []
  for s in range(sites):
    members = np.flatnonzero(site == s)
    for part in dirichlet_partition(labels[members], per_site, alpha, seed * 1009 + s, min_size):
      partition.append(members[part])
  return partition


def sited_even_partition(length: int, clients: int, sites: int) -> list[np.ndarray]:
  """Each site's block dealt in turn to the site's clients (held-out splits)."""
  check_layout(clients, sites)
  per_site = clients // sites
  site = site_of_index(np.arange(length), length, sites)
  partition = []
  for s in range(sites):
    members = np.flatnonzero(site == s)
    if len(members) < per_site:
      raise ValueError(f"Site {s} has {len(members)} examples of the split for its {per_site} clients.")
    partition.extend(members[j::per_site] for j in range(per_site))
  return partition


def partition_counts(partition: list[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(label values, counts (clients, values)): how many examples of each label value each client holds."""
  labels = np.asarray(labels)
  values = np.unique(labels)
  counts = np.stack([np.array([np.sum(labels[p] == v) for v in values]) for p in partition])
  return values, counts


def describe(partition: list[np.ndarray], labels: np.ndarray, label_name: str, sites: int) -> str:
  """One line per client: its site, size, number of distinct label values and its largest label share."""
  values, counts = partition_counts(partition, labels)
  lines = []
  for k, row in enumerate(counts):
    total = int(row.sum())
    lines.append(f"client {k} (site {site_of_client(k, len(partition), sites)}): {total} examples, "
                 f"{int(np.sum(row > 0))}/{len(values)} {label_name} values, largest share "
                 f"{row.max() / max(total, 1):.0%}")
  return "\n".join(lines)


def split_labels(source, label: str) -> np.ndarray:
  """The value of `label` for every example of `source`: the source's cheap `labels(name)` if it has one."""
  if hasattr(source, "labels"):
    return np.asarray(source.labels(label))
  return np.asarray([source[i][label] for i in range(len(source))])


def client_partitions(config, split: str, length: int) -> list[np.ndarray]:
  """``config.data.client_partition`` "dirichlet" or "sites" (hallujax.data.pipeline.client_partitions dispatches
  here). "sites" gives client s all of site s's examples in every split (clients = sites)."""
  from absl import logging
  from hallujax.data.sources import make_source
  d = config.data
  clients = int(d.clients)
  sites = site_count(d)
  if d.client_partition == "sites" and clients != sites:
    raise ValueError(f"config.data.client_partition='sites' gives one client per site; config.data.clients="
                     f"{clients}, expected {sites}.")
  if split != "train" or d.client_partition == "sites":
    return sited_even_partition(length, clients, sites)
  p = d.partition
  source = make_source(d, split)
  labels = split_labels(source, p.label)
  if len(labels) != length:
    raise ValueError(f"The {split} split has {length} examples but {len(labels)} {p.label} labels.")
  partition = sited_dirichlet_partition(labels, clients, sites, float(p.alpha), int(p.seed), int(p.min_size))
  logging.info("Dirichlet(α=%s) partition of the %s split over %s:\n%s", p.alpha, split, p.label,
               describe(partition, labels, p.label, sites))
  return partition
