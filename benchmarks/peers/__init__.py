"""One module per peer. Each exposes

    build(workload, data, learning_rate, **options) -> Peer

where `data` is `workloads.client_data(...)` (numpy). `build` puts the data
where the peer wants it (device arrays, `tf.data` datasets) and builds the
computation; nothing is compiled or run until `Peer.run`. `options` are the
peer's entry in `PEERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

# peer name -> (module under benchmarks.peers, environment it runs in,
# keyword arguments of the module's `build`).
PEERS = {
    'jaxclient': ('jaxclient_client_work', 'core', {}),
    'jaxclient_cores': ('jaxclient_client_work', 'core',
                        {'one_device_per_core': True}),
    'plain_loop': ('plain_loop', 'core', {}),
    'drjax': ('drjax_map_fn', 'bench', {}),
    'fedjax': ('fedjax_for_each_client', 'bench', {}),
    'tff': ('tff_client_work', 'tff', {'loop': 'DATASET_REDUCE'}),
    'tff_iterator': ('tff_client_work', 'tff', {'loop': 'DATASET_ITERATOR'}),
    'jaxclient_tff': ('jaxclient_tff_client_work', 'tff', {}),
    'jaxclient_tff_jax': ('jaxclient_tff_client_work', 'tff',
                          {'backend': 'jax'}),
}


class Peer(NamedTuple):
  """A built peer.

  Attributes:
    run: trains every client once (one round of client work) and returns
      only when all results are computed (`block_until_ready` or numpy).
    mean_update: from `run`'s output, the example-weighted mean of the
      clients' updates, flattened (`workloads.weighted_mean_update`), to check
      that every peer computes the same thing.
  """

  run: Callable[[], Any]
  mean_update: Callable[[Any], Any]
