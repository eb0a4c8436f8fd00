"""`python -m benchmarks`: jaxclient side by side with its peers.

    python -m benchmarks                 # the full CPU table (~30 min here)
    python -m benchmarks --quick         # 10 and 100 clients, 3 repeats
    python -m benchmarks --workloads 2nn --clients 10 100 --peers jaxclient tff

Writes OUT.json and OUT.md (default `runs/bench-<date>`). Each peer runs in
its own environment (see README.md): core `.venv`, TFF `.venv-tff`, DrJAX and
FedJAX `.venv-bench`; `--python ENV=PATH` points an environment elsewhere
(the GPU script runs every JAX peer with the device's python3).
"""

import argparse
import os
import sys
import time

from benchmarks import report
from benchmarks import runner
from benchmarks.peers import PEERS


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks',
      description='jaxclient side by side with TFF, DrJAX, FedJAX and a '
      'plain loop.')
  parser.add_argument('--quick', action='store_true',
                      help='10 and 100 clients, 3 repeats, 20 s round cap')
  parser.add_argument('--workloads', nargs='+', default=['2nn', 'cnn'],
                      choices=['2nn', 'cnn'])
  parser.add_argument('--clients', nargs='+', type=int, default=None,
                      help='cohort sizes (default 10 100 1000)')
  parser.add_argument('--peers', nargs='+', default=list(PEERS),
                      choices=list(PEERS))
  parser.add_argument('--repeats', type=int, default=None,
                      help='timed rounds per peer per cell (default 5)')
  parser.add_argument('--max-round-s', type=float, default=None,
                      help='skip a peer whose projected round is longer '
                      '(default 40)')
  parser.add_argument('--max-clients', nargs='*', default=[],
                      metavar='PEER=N', help='largest cohort for a peer')
  parser.add_argument('--python', nargs='*', default=[], metavar='ENV=PATH',
                      help='interpreter for env core, bench or tff')
  parser.add_argument('--out', default=None,
                      help='output stem (writes OUT.json and OUT.md)')
  args = parser.parse_args(argv)
  args.clients = args.clients or ([10, 100] if args.quick else
                                  [10, 100, 1000])
  args.repeats = args.repeats or (3 if args.quick else 5)
  args.max_round_s = args.max_round_s or (20.0 if args.quick else 40.0)
  return args


def _pairs(items, convert=str):
  return {k: convert(v) for k, v in (item.split('=', 1) for item in items)}


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  out = args.out or os.path.join(
      str(runner.REPO), 'runs', time.strftime('bench-%Y%m%d-%H%M'))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  results = runner.run(
      args.workloads, args.clients, args.peers, repeats=args.repeats,
      max_round_s=args.max_round_s,
      max_clients=_pairs(args.max_clients, int),
      envs=_pairs(args.python), log_path=out + '.log',
      on_cell=lambda partial: report.write(partial, out))
  json_path, md_path = report.write(results, out)
  print(report.markdown(results))
  print(f'wrote {json_path} and {md_path}', file=sys.stderr)


if __name__ == '__main__':
  main()
