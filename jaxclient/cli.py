"""The `jaxclient` command: a federated simulation from data to plot.

    jaxclient                       # FedAvg of an MLP on digits, defaults
    jaxclient --dataset synthetic --synthetic-alpha 1 --synthetic-beta 1
    jaxclient --dataset npz --data-file my_clients.npz --model cnn
    jaxclient --output-dir runs/a --rounds 100 --resume

Each round samples `--clients-per-round` clients (from `--seed` and the
round number alone, so a resumed run draws the same cohorts), packs their
data (shuffled per round), and runs one round of
`jaxclient.algorithms.build_weighted_fed_avg`. The next round's data is
packed and moved to the devices while the current round trains. Every
`--eval-every` rounds the global model is evaluated on the held-out set.

The output directory receives `history.json` (config and per-round
metrics), `history.csv`, `plot.png` (accuracy and loss over rounds) and
`checkpoint.msgpack` (every `--checkpoint-every` rounds and at the end).
`--resume` continues from that checkpoint to the same result as an
uninterrupted run. Bad flags or a bad data file print one error line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxclient import algorithms
from jaxclient import checkpoint
from jaxclient import data as data_lib
from jaxclient import datasets
from jaxclient import losses
from jaxclient import metrics
from jaxclient import models
from jaxclient import optimizers
from jaxclient import sharding

_OPTIMIZERS = ('sgd', 'sgdm', 'adam', 'adagrad', 'rmsprop', 'yogi')
_MODELS = ('mlp', 'cnn')
_DATASETS = ('digits', 'synthetic', 'npz')
# Flags that do not change the trained model; they may differ on --resume.
_RESUMABLE_FLAGS = ('rounds', 'resume', 'output_dir', 'name', 'eval_every',
                    'checkpoint_every', 'progress', 'clients_per_chunk')
CHECKPOINT = 'checkpoint.msgpack'
# The optional dependencies of the command (pyproject's `sim` extra).
_SIM_MODULES = ('sklearn', 'tqdm', 'matplotlib')


class UsageError(Exception):
  """A flag, a data file or the output directory is unusable."""


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    raise UsageError(message)


def _int_at_least(text, minimum):
  kind = 'positive' if minimum == 1 else 'non-negative'
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected a {kind} int, found {text!r}')
  if value < minimum:
    raise argparse.ArgumentTypeError(f'expected a {kind} int, found {value}')
  return value


def _positive_int(text):
  return _int_at_least(text, 1)


def _nonnegative_int(text):
  return _int_at_least(text, 0)


def _float_at_least_zero(text, strict):
  kind = 'positive' if strict else 'non-negative'
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'expected a {kind} number, found {text!r}')
  if not math.isfinite(value) or value < 0 or (strict and value == 0):
    raise argparse.ArgumentTypeError(f'expected a {kind} number, found {value}')
  return value


def _positive_float(text):
  return _float_at_least_zero(text, strict=True)


def _nonnegative_float(text):
  return _float_at_least_zero(text, strict=False)


def build_parser() -> argparse.ArgumentParser:
  """The command's flags and their defaults."""
  p = _Parser(prog='jaxclient', description=(
      'Federated averaging simulation in JAX (jaxclient). Defaults train an '
      "MLP on scikit-learn's digits split over 100 clients."))
  data = p.add_argument_group('data')
  data.add_argument('--dataset', choices=_DATASETS, default='digits')
  data.add_argument('--data-file', help='the .npz for --dataset npz '
                    '(layout: jaxclient.datasets module docstring)')
  data.add_argument('--num-clients', type=_positive_int, default=100,
                    help='clients to split digits/synthetic over')
  data.add_argument('--alpha', type=_positive_float, default=0.5,
                    help='Dirichlet label skew of digits (small: non-IID)')
  data.add_argument('--synthetic-alpha', type=_nonnegative_float, default=1.0)
  data.add_argument('--synthetic-beta', type=_nonnegative_float, default=1.0)
  train = p.add_argument_group('training')
  train.add_argument('--model', choices=_MODELS, default='mlp')
  train.add_argument('--rounds', type=_positive_int, default=100)
  train.add_argument('--clients-per-round', type=_positive_int, default=20)
  train.add_argument('--local-epochs', type=_positive_int, default=2)
  train.add_argument('--batch-size', type=_positive_int, default=16)
  train.add_argument('--client-optimizer', choices=_OPTIMIZERS, default='sgd')
  train.add_argument('--client-lr', type=_positive_float, default=0.2)
  train.add_argument('--server-optimizer', choices=_OPTIMIZERS, default='sgd')
  train.add_argument('--server-lr', type=_positive_float, default=1.0)
  train.add_argument('--clients-per-chunk', type=_positive_int, default=None,
                     help='train a round in chunks of this many clients')
  train.add_argument('--seed', type=_nonnegative_int, default=0)
  train.add_argument('--cpu-devices', type=_positive_int, default=None,
                     help='CPU devices to split each cohort over (default: '
                     'one per core, when this command starts JAX)')
  out = p.add_argument_group('output')
  out.add_argument('--name', default=None,
                   help='run name; default <dataset>-<model>')
  out.add_argument('--output-dir', default=None,
                   help='default ./runs/<name>')
  out.add_argument('--eval-every', type=_positive_int, default=5)
  out.add_argument('--checkpoint-every', type=_positive_int, default=10)
  out.add_argument('--resume', action='store_true',
                   help='continue from the checkpoint in --output-dir')
  out.add_argument('--no-progress', dest='progress', action='store_false',
                   help='no progress bar')
  return p


# -- building blocks -------------------------------------------------------

def _load_data(args):
  try:
    if args.dataset == 'digits':
      return datasets.digits(args.num_clients, args.alpha, seed=args.seed)
    if args.dataset == 'synthetic':
      return datasets.synthetic(args.num_clients, args.synthetic_alpha,
                                args.synthetic_beta, seed=args.seed)
    if args.data_file is None:
      raise UsageError('--dataset npz needs --data-file PATH.')
    return datasets.load_npz(args.data_file)
  except datasets.DataError as e:
    raise UsageError(str(e)) from e


class Mlp(nn.Module):
  """`--model mlp`: flatten, Dense(128), ReLU, Dense(num_classes)."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(self.num_classes)(x)


class Cnn(nn.Module):
  """`--model cnn`: two 3-wide convolutions (16, 32 channels, ReLU) over
  the example's leading axes, then Dense(64), ReLU, Dense(num_classes).
  Flat examples `[F]` are one channel of length F."""

  num_classes: int

  @nn.compact
  def __call__(self, x):
    if x.ndim == 2:
      x = x[:, :, None]
    x = nn.relu(nn.Conv(16, (3,) * (x.ndim - 2))(x))
    x = nn.relu(nn.Conv(32, (3,) * (x.ndim - 2))(x))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(64)(x))
    return nn.Dense(self.num_classes)(x)


def _build_model(name, sample_x, sample_y, num_classes, seed):
  if name == 'cnn' and sample_x.ndim not in (2, 3, 4):
    raise UsageError(f'--model cnn: expected examples of rank 1 to 3, found '
                     f'shape {sample_x.shape[1:]}.')
  module = (Mlp if name == 'mlp' else Cnn)(num_classes)
  return models.from_flax(
      module, sample_x, losses.sparse_categorical_crossentropy,
      metrics={'accuracy': metrics.sparse_categorical_accuracy()},
      rng=jax.random.PRNGKey(seed), sample_y=sample_y)


def _optimizer(name, learning_rate):
  if name == 'sgd':
    return optimizers.build_sgdm(learning_rate)
  if name == 'sgdm':
    return optimizers.build_sgdm(learning_rate, momentum=0.9)
  return getattr(optimizers, f'build_{name}')(learning_rate)


@dataclasses.dataclass
class _RoundSampler:
  """The cohort of each round, a function of the seed and the round only."""

  train: list
  clients_per_round: int
  batch_size: int
  local_epochs: int
  seed: int
  # Every round pads to the batches of the largest client: one shape, one
  # compilation.
  num_batches: int = dataclasses.field(init=False)

  def __post_init__(self):
    largest = max(len(c['y']) for c in self.train)
    self.num_batches = max(1, math.ceil(largest * self.local_epochs /
                                        self.batch_size))

  def __call__(self, round_num):
    rng = np.random.default_rng([self.seed, round_num])
    chosen = rng.choice(len(self.train), self.clients_per_round,
                        replace=False)
    return data_lib.pack([self.train[i] for i in chosen], self.batch_size,
                        self.local_epochs, shuffle=True,
                        seed=int(rng.integers(2**31)),
                        num_batches=self.num_batches)


def _evaluator(model, test):
  @jax.jit
  def evaluate(weights, x, y):
    logits = model.predict_on_batch(weights, x, False)
    mask = jnp.ones(y.shape, bool)
    return (model.loss(logits, y, mask),
            jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)))

  def run(weights):
    loss, accuracy = evaluate(weights, test['x'], test['y'])
    return float(loss), float(accuracy)
  return run if len(test['y']) else None


def _split_cpu(count):
  """One CPU device per core (`count` if given), so that FedAvg's mesh
  spreads each cohort over every core. Without `count`, a process in which
  JAX has already started (the command called from Python) keeps its
  devices."""
  try:
    sharding.set_cpu_device_count(count)
  except RuntimeError as e:
    if count is not None:
      raise UsageError(f'--cpu-devices: {e}') from None


def _check_resume(args, output_dir):
  path = os.path.join(output_dir, 'history.json')
  if not os.path.exists(os.path.join(output_dir, CHECKPOINT)) or (
      not os.path.exists(path)):
    raise UsageError(f'--resume: no checkpoint in {output_dir}; run without '
                     '--resume first.')
  with open(path) as f:
    saved = json.load(f)
  changed = sorted(k for k, v in vars(args).items()
                   if k not in _RESUMABLE_FLAGS and saved['config'].get(k) != v)
  if changed:
    raise UsageError(
        f'--resume: flags differ from the checkpointed run in {output_dir}: ' +
        ', '.join(f'--{k.replace("_", "-")} was {saved["config"].get(k)!r}, '
                  f'now {getattr(args, k)!r}' for k in changed) + '.')
  return saved['history']


def _restore(path, process, initial_state):
  """The round and the state saved at `path`, placed on the process's mesh."""
  try:
    saved = checkpoint.restore(path, {'round': np.int32(0),
                                      'state': jax.device_get(initial_state)})
  except (OSError, ValueError) as e:
    raise UsageError(f'--resume: {e}') from e
  return int(saved['round']), sharding.put_replicated(saved['state'],
                                                      process.mesh)


# -- outputs ---------------------------------------------------------------

_COLUMNS = ('round', 'train_loss', 'train_accuracy', 'train_num_examples',
            'eval_loss', 'eval_accuracy', 'elapsed_s')


def _write_history(output_dir, config, history):
  tmp = os.path.join(output_dir, '.history.json.tmp')
  with open(tmp, 'w') as f:
    json.dump({'config': config, 'history': history}, f, indent=1)
  os.replace(tmp, os.path.join(output_dir, 'history.json'))
  with open(os.path.join(output_dir, 'history.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, _COLUMNS)
    writer.writeheader()
    writer.writerows(history)


def _plot(path, history):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  rounds = [h['round'] for h in history]
  evaluated = [h for h in history if h['eval_loss'] is not None]
  fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key in ((acc, 'accuracy'), (loss, 'loss')):
    ax.plot(rounds, [h[f'train_{key}'] for h in history], label='train')
    if evaluated:
      ax.plot([h['round'] for h in evaluated],
              [h[f'eval_{key}'] for h in evaluated], 'o-', label='held-out')
    ax.set_xlabel('round')
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _table(history, wall_s, output_dir):
  last = history[-1]
  evaluated = [h for h in history if h['eval_accuracy'] is not None]
  rows = [('rounds', f"{last['round']}"),
          ('train loss (last round)', f"{last['train_loss']:.4f}"),
          ('train accuracy (last round)', f"{last['train_accuracy']:.4f}")]
  if evaluated:
    rows += [(f"held-out loss (round {evaluated[-1]['round']})",
              f"{evaluated[-1]['eval_loss']:.4f}"),
             (f"held-out accuracy (round {evaluated[-1]['round']})",
              f"{evaluated[-1]['eval_accuracy']:.4f}")]
  rows += [('wall time (this invocation)', f'{wall_s:.1f} s'),
           ('outputs', output_dir)]
  width = max(len(k) for k, _ in rows)
  return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


# -- the run ---------------------------------------------------------------

def run(args) -> dict:
  """Runs the simulation that `args` (parsed flags) describe.

  Returns:
    The last round's history entry.
  """
  started = time.perf_counter()
  _split_cpu(args.cpu_devices)
  name = args.name or f'{args.dataset}-{args.model}'
  output_dir = args.output_dir or os.path.join('runs', name)
  history = _check_resume(args, output_dir) if args.resume else []

  fed = _load_data(args)
  if args.clients_per_round > len(fed.train):
    raise UsageError(f'--clients-per-round: expected at most the '
                     f'{len(fed.train)} clients of the data set, found '
                     f'{args.clients_per_round}.')
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  sample = fed.train[0]
  model = _build_model(args.model, sample['x'][:1], sample['y'][:1],
                       fed.num_classes, args.seed)
  process = algorithms.build_weighted_fed_avg(
      model, _optimizer(args.client_optimizer, args.client_lr),
      _optimizer(args.server_optimizer, args.server_lr),
      clients_per_chunk=args.clients_per_chunk)
  sample_round = _RoundSampler(fed.train, args.clients_per_round,
                               args.batch_size, args.local_epochs, args.seed)
  evaluate = _evaluator(model, fed.test)

  state, start = process.initialize(), 0
  ckpt_path = os.path.join(output_dir, CHECKPOINT)
  if args.resume:
    start, state = _restore(ckpt_path, process, state)
    history = [h for h in history if h['round'] <= start]
  os.makedirs(output_dir, exist_ok=True)
  config = dict(vars(args))

  bar = tqdm(total=args.rounds, initial=min(start, args.rounds),
             desc=name, unit='round', disable=not args.progress,
             file=sys.stderr)
  cohort = (process.prefetch(sample_round(start + 1))
            if start < args.rounds else None)
  last_eval = '-'
  for round_num in range(start + 1, args.rounds + 1):
    output = process.next(state, cohort)
    if round_num < args.rounds:  # Overlaps the round just dispatched.
      cohort = process.prefetch(sample_round(round_num + 1))
    state = output.state
    train = jax.device_get(output.metrics['client_work']['train'])
    entry = {'round': round_num, 'train_loss': float(train['loss']),
             'train_accuracy': float(train['accuracy']),
             'train_num_examples': int(train['num_examples']),
             'eval_loss': None, 'eval_accuracy': None}
    if evaluate and (round_num % args.eval_every == 0 or
                     round_num == args.rounds):
      entry['eval_loss'], entry['eval_accuracy'] = evaluate(
          process.get_model_weights(state))
      last_eval = f"{entry['eval_accuracy']:.3f}"
    entry['elapsed_s'] = round(time.perf_counter() - started, 3)
    history.append(entry)
    bar.update(1)
    bar.set_postfix(loss=f"{entry['train_loss']:.3f}",
                    acc=f"{entry['train_accuracy']:.3f}", eval_acc=last_eval)
    if round_num % args.checkpoint_every == 0 or round_num == args.rounds:
      _write_history(output_dir, config, history)
      checkpoint.save(ckpt_path, {'round': np.int32(round_num),
                                  'state': state})
  bar.close()
  _write_history(output_dir, config, history)
  _plot(os.path.join(output_dir, 'plot.png'), history)
  print(_table(history, time.perf_counter() - started, output_dir))
  return history[-1]


def main(argv=None) -> int:
  """Parses `argv` (default `sys.argv[1:]`), runs, returns the exit status:
  0 on success, 2 with one error line on stderr for bad flags or data."""
  try:
    run(build_parser().parse_args(argv))
  except UsageError as e:
    print(f'jaxclient: error: {e}', file=sys.stderr)
    return 2
  except ModuleNotFoundError as e:
    if e.name not in _SIM_MODULES:
      raise
    print(f'jaxclient: error: the command needs {e.name}; install '
          "jaxclient[sim].", file=sys.stderr)
    return 2
  return 0
