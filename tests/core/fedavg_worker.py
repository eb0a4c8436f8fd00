"""Runs tests/core/fedavg_scenario.py in its own process and saves the result.

    python -m tests.core.fedavg_worker OUT.npz --local-devices N
        [--clients-per-chunk K]
        [--num-processes P --process-id I --port PORT]

`--local-devices` forces N CPU devices (XLA_FLAGS, set before JAX is
imported). With `--num-processes`, the process joins a `jax.distributed`
run on localhost:PORT; every process writes OUT with its process id
appended. The npz holds the trainable weights (`w/<name>`), each round's
train metrics (`m<round>/<name>`) and the device counts seen.
"""

import argparse
import os


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('out')
  parser.add_argument('--local-devices', type=int, default=1)
  parser.add_argument('--clients-per-chunk', type=int, default=None)
  parser.add_argument('--num-processes', type=int, default=None)
  parser.add_argument('--process-id', type=int, default=None)
  parser.add_argument('--port', type=int, default=None)
  args = parser.parse_args()
  os.environ['XLA_FLAGS'] = (
      f'--xla_force_host_platform_device_count={args.local_devices}')
  os.environ['JAX_PLATFORMS'] = 'cpu'

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxclient import sharding  # pylint: disable=g-import-not-at-top
  from tests.core import fedavg_scenario  # pylint: disable=g-import-not-at-top

  out = args.out
  if args.num_processes:
    sharding.initialize_distributed(f'localhost:{args.port}',
                                    args.num_processes, args.process_id)
    out = f'{out}.{args.process_id}'
  process = fedavg_scenario.build(clients_per_chunk=args.clients_per_chunk)
  # The cohort's first chunk must really be split over every device.
  first_chunk = process.prefetch(fedavg_scenario.cohort(0)).chunks[0]
  shard_devices = {s.device for s in first_chunk['x'].addressable_shards}
  trainable, metrics = fedavg_scenario.run(process)
  arrays = {f'w/{k}': v for k, v in trainable.items()}
  for i, round_metrics in enumerate(metrics):
    arrays.update({f'm{i}/{k}': v for k, v in round_metrics.items()})
  arrays['num_devices'] = np.int32(len(jax.devices()))
  arrays['mesh_size'] = np.int32(process.mesh.devices.size)
  arrays['local_shard_devices'] = np.int32(len(shard_devices))
  arrays['process_count'] = np.int32(jax.process_count())
  np.savez(out, **arrays)
  if args.num_processes:
    jax.distributed.shutdown()


if __name__ == '__main__':
  main()
