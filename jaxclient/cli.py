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
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxclient import (
  _validation,
  algorithms,
  datasets,
  flax_models,
  optimizers,
  sharding,
)
from jaxclient import checkpoint as checkpoint_lib
from jaxclient import data as data_lib
from jaxclient.typing import PyTree

__all__ = [
  'CHECKPOINT',
  'Experiment',
  'UsageError',
  'build_parser',
  'main',
  'run',
]

_OPTIMIZERS = ('sgd', 'sgdm', 'adam', 'adagrad', 'rmsprop', 'yogi')
_MODELS = tuple(flax_models.MODELS)
_DATASETS = ('digits', 'synthetic', 'npz')
# Flags that do not change the trained model; they may differ on --resume.
_RESUMABLE_FLAGS = (
  'rounds',
  'resume',
  'output_dir',
  'name',
  'eval_every',
  'checkpoint_every',
  'progress',
  'clients_per_chunk',
)
CHECKPOINT = 'checkpoint.msgpack'
# The optional dependencies of the command (pyproject's `sim` extra).
_SIM_MODULES = ('sklearn', 'tqdm', 'matplotlib')


class UsageError(Exception):
  """A flag, a data file or the output directory is unusable."""


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    raise UsageError(message)


def _int_type(minimum: int) -> Callable[[str], int]:
  """An argparse type: the text as an int that `check_int` accepts."""

  def parse(text):
    try:
      value = int(text)
    except ValueError:
      value = text  # check_int rejects it and shows the text as found.
    try:
      return _validation.check_int('', value, minimum=minimum)
    except ValueError as e:
      # argparse prefixes "argument --flag: "; keep "expected ..., found ...".
      raise argparse.ArgumentTypeError(
        str(e).partition(': ')[2].rstrip('.')
      ) from None

  return parse


_positive_int = _int_type(1)
_nonnegative_int = _int_type(0)


def _float_at_least_zero(text, strict):
  kind = 'positive' if strict else 'non-negative'
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f'expected a {kind} number, found {text!r}'
    ) from None
  if not math.isfinite(value) or value < 0 or (strict and value == 0):
    raise argparse.ArgumentTypeError(f'expected a {kind} number, found {value}')
  return value


def _positive_float(text):
  return _float_at_least_zero(text, strict=True)


def _nonnegative_float(text):
  return _float_at_least_zero(text, strict=True)


def build_parser() -> argparse.ArgumentParser:
  """The command's flags and their defaults."""
  p = _Parser(
    prog='jaxclient',
    description=(
      'Federated averaging simulation in JAX (jaxclient). Defaults train an '
      "MLP on scikit-learn's digits split over 100 clients."
    ),
  )
  _add_data_flags(p.add_argument_group('data'))
  _add_training_flags(p.add_argument_group('training'))
  _add_output_flags(p.add_argument_group('output'))
  return p


def _add_data_flags(data):
  data.add_argument('--dataset', choices=_DATASETS, default='digits')
  data.add_argument(
    '--data-file',
    help='the .npz for --dataset npz '
    '(layout: jaxclient.datasets module docstring)',
  )
  data.add_argument(
    '--num-clients',
    type=_positive_int,
    default=100,
    help='clients to split digits/synthetic over',
  )
  data.add_argument(
    '--alpha',
    type=_positive_float,
    default=0.5,
    help='Dirichlet label skew of digits (small: non-IID)',
  )
  data.add_argument('--synthetic-alpha', type=_nonnegative_float, default=1.0)
  data.add_argument('--synthetic-beta', type=_nonnegative_float, default=1.0)


def _add_training_flags(train):
  train.add_argument('--model', choices=_MODELS, default='mlp')
  train.add_argument('--rounds', type=_positive_int, default=100)
  train.add_argument('--clients-per-round', type=_positive_int, default=20)
  train.add_argument('--local-epochs', type=_positive_int, default=2)
  train.add_argument('--batch-size', type=_positive_int, default=16)
  train.add_argument('--client-optimizer', choices=_OPTIMIZERS, default='sgd')
  train.add_argument('--client-lr', type=_positive_float, default=0.2)
  train.add_argument('--server-optimizer', choices=_OPTIMIZERS, default='sgd')
  train.add_argument('--server-lr', type=_positive_float, default=1.0)
  train.add_argument(
    '--clients-per-chunk',
    type=_positive_int,
    default=None,
    help='train a round in chunks of this many clients',
  )
  train.add_argument('--seed', type=_nonnegative_int, default=0)
  train.add_argument(
    '--cpu-devices',
    type=_positive_int,
    default=None,
    help='CPU devices to split each cohort over (default: '
    'one per core, when this command starts JAX)',
  )


def _add_output_flags(out):
  out.add_argument(
    '--name', default=None, help='run name; default <dataset>-<model>'
  )
  out.add_argument('--output-dir', default=None, help='default ./runs/<name>')
  out.add_argument('--eval-every', type=_positive_int, default=5)
  out.add_argument('--checkpoint-every', type=_positive_int, default=10)
  out.add_argument(
    '--resume',
    action='store_true',
    help='continue from the checkpoint in --output-dir',
  )
  out.add_argument(
    '--no-progress',
    dest='progress',
    action='store_false',
    help='no progress bar',
  )


# -- building blocks -------------------------------------------------------


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
  """The saved history of the run in `output_dir`, once its flags are
  checked against `args`."""
  path = os.path.join(output_dir, 'history.json')
  if not os.path.exists(os.path.join(output_dir, CHECKPOINT)) or (
    not os.path.exists(path)
  ):
    raise UsageError(
      f'--resume: no checkpoint in {output_dir}; run without --resume first.'
    )
  with open(path) as f:
    saved = json.load(f)
  changed = sorted(
    k
    for k, v in vars(args).items()
    if k not in _RESUMABLE_FLAGS and saved['config'].get(k) != v
  )
  if changed:
    raise UsageError(
      f'--resume: flags differ from the checkpointed run in {output_dir}: '
      + ', '.join(
        f'--{k.replace("_", "-")} was {saved["config"].get(k)!r}, '
        f'now {getattr(args, k)!r}'
        for k in changed
      )
      + '.'
    )
  return saved['history']


def _load_data(args) -> datasets.FederatedData:
  """The data set of `--dataset`, with at least `--clients-per-round`
  clients."""
  try:
    if args.dataset == 'digits':
      fed = datasets.digits(args.num_clients, args.alpha, seed=args.seed)
    elif args.dataset == 'synthetic':
      fed = datasets.synthetic(
        args.num_clients,
        args.synthetic_alpha,
        args.synthetic_beta,
        seed=args.seed,
      )
    elif args.data_file is None:
      raise UsageError('--dataset npz needs --data-file PATH.')
    else:
      fed = datasets.load_npz(args.data_file)
  except datasets.DataError as e:
    raise UsageError(str(e)) from e
  if args.clients_per_round > len(fed.train):
    raise UsageError(
      f'--clients-per-round: expected at most the '
      f'{len(fed.train)} clients of the data set, found '
      f'{args.clients_per_round}.'
    )
  return fed


def _run_name(args) -> str:
  return args.name or f'{args.dataset}-{args.model}'


def _tqdm():
  """tqdm's progress bar; a ModuleNotFoundError without `jaxclient[sim]`."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm


def _build_model(args, fed):
  """The `jaxclient.flax_models` classifier of `--model` for `fed`."""
  sample = fed.train[0]
  sample_x, sample_y = sample['x'][:1], sample['y'][:1]
  if args.model == 'cnn' and sample_x.ndim not in (2, 3, 4):
    raise UsageError(
      f'--model cnn: expected examples of rank 1 to 3, found '
      f'shape {sample_x.shape[1:]}.'
    )
  return flax_models.classifier(
    args.model, sample_x, sample_y, fed.num_classes, seed=args.seed
  )


def _optimizer(name, learning_rate):
  if name == 'sgd':
    return optimizers.build_sgdm(learning_rate)
  if name == 'sgdm':
    return optimizers.build_sgdm(learning_rate, momentum=0.9)
  return getattr(optimizers, f'build_{name}')(learning_rate)


def _build_process(args, model):
  """FedAvg of `model` with the optimizers of the flags."""
  return algorithms.build_weighted_fed_avg(
    model,
    _optimizer(args.client_optimizer, args.client_lr),
    _optimizer(args.server_optimizer, args.server_lr),
    clients_per_chunk=args.clients_per_chunk,
  )


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
    self.num_batches = max(
      1, math.ceil(largest * self.local_epochs / self.batch_size)
    )

  def __call__(self, round_num):
    rng = np.random.default_rng([self.seed, round_num])
    chosen = rng.choice(len(self.train), self.clients_per_round, replace=False)
    return data_lib.pack(
      [self.train[i] for i in chosen],
      self.batch_size,
      self.local_epochs,
      shuffle=True,
      seed=int(rng.integers(2**31)),
      num_batches=self.num_batches,
    )


def _evaluator(model, test):
  """`weights -> (loss, accuracy)` on the held-out set; None when it is
  empty."""

  @jax.jit
  def evaluate(weights, x, y):
    logits = model.predict_on_batch(weights, x, False)
    mask = jnp.ones(y.shape, bool)
    return (
      model.loss(logits, y, mask),
      jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)),
    )

  def evaluate_weights(weights):
    loss, accuracy = evaluate(weights, test['x'], test['y'])
    return float(loss), float(accuracy)

  return evaluate_weights if len(test['y']) else None


# -- outputs ---------------------------------------------------------------

_COLUMNS = (
  'round',
  'train_loss',
  'train_accuracy',
  'train_num_examples',
  'eval_loss',
  'eval_accuracy',
  'elapsed_s',
)


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
      ax.plot(
        [h['round'] for h in evaluated],
        [h[f'eval_{key}'] for h in evaluated],
        'o-',
        label='held-out',
      )
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
  rows = [
    ('rounds', f'{last["round"]}'),
    ('train loss (last round)', f'{last["train_loss"]:.4f}'),
    ('train accuracy (last round)', f'{last["train_accuracy"]:.4f}'),
  ]
  if evaluated:
    rows += [
      (
        f'held-out loss (round {evaluated[-1]["round"]})',
        f'{evaluated[-1]["eval_loss"]:.4f}',
      ),
      (
        f'held-out accuracy (round {evaluated[-1]["round"]})',
        f'{evaluated[-1]["eval_accuracy"]:.4f}',
      ),
    ]
  rows += [
    ('wall time (this invocation)', f'{wall_s:.1f} s'),
    ('outputs', output_dir),
  ]
  width = max(len(k) for k, _ in rows)
  return '\n'.join(f'{k:<{width}}  {v}' for k, v in rows)


# -- the run ---------------------------------------------------------------


@dataclasses.dataclass
class Experiment:
  """One invocation of the command: its flags, data, process and history.

  `Experiment.setup(args)` checks the flags and builds everything (and, with
  `--resume`, restores the checkpoint); `run()` trains the rounds after
  `start` up to `--rounds`, one `train_round` at a time, with `evaluate`
  and `checkpoint` as the flags say, then `report`s.

  Attributes:
    args: the parsed flags.
    output_dir: where the outputs go.
    process: the FedAvg process.
    sample_round: round number -> that round's packed cohort.
    evaluator: weights -> held-out `(loss, accuracy)`; None without a
      held-out set.
    state: the process state after round `start`.
    start: the rounds already trained (0, or the checkpoint's round).
    history: one entry per round trained, `_COLUMNS` as keys.
    started: `time.perf_counter()` when the invocation began.
  """

  args: argparse.Namespace
  output_dir: str
  process: algorithms.FedAvgProcess
  sample_round: _RoundSampler
  evaluator: Callable[[PyTree], tuple[float, float]] | None
  state: PyTree
  start: int
  history: list[dict]
  started: float

  @classmethod
  def setup(cls, args) -> Experiment:
    """Devices, output directory, resume check, data, model, process and
    state, in that order: a bad flag fails before any training."""
    started = time.perf_counter()
    _split_cpu(args.cpu_devices)
    output_dir = args.output_dir or os.path.join('runs', _run_name(args))
    history = _check_resume(args, output_dir) if args.resume else []
    fed = _load_data(args)
    _tqdm()  # Fails without the `[sim]` extra before the model is built.
    model = _build_model(args, fed)
    process = _build_process(args, model)
    experiment = cls(
      args=args,
      output_dir=output_dir,
      process=process,
      sample_round=_RoundSampler(
        fed.train,
        args.clients_per_round,
        args.batch_size,
        args.local_epochs,
        args.seed,
      ),
      evaluator=_evaluator(model, fed.test),
      state=process.initialize(),
      start=0,
      history=history,
      started=started,
    )
    if args.resume:
      experiment.restore()
    os.makedirs(output_dir, exist_ok=True)
    return experiment

  @property
  def checkpoint_path(self) -> str:
    return os.path.join(self.output_dir, CHECKPOINT)

  def restore(self) -> None:
    """Continues from the checkpoint: its round and state (placed on the
    process's mesh); history entries after its round are dropped."""
    try:
      saved = checkpoint_lib.restore(
        self.checkpoint_path,
        {'round': np.int32(0), 'state': jax.device_get(self.state)},
      )
    except (OSError, ValueError) as e:
      raise UsageError(f'--resume: {e}') from e
    self.start = int(saved['round'])
    self.state = sharding.put_replicated(saved['state'], self.process.mesh)
    self.history = [h for h in self.history if h['round'] <= self.start]

  def run(self) -> dict:
    """Trains the remaining rounds, then reports.

    Returns:
      The last round's history entry.
    """
    last_eval = '-'
    with self._progress_bar() as bar:
      cohort = self._prefetch(self.start + 1)
      for round_num in range(self.start + 1, self.args.rounds + 1):
        entry, cohort = self.train_round(round_num, cohort)
        entry.update(self.evaluate(round_num))
        entry['elapsed_s'] = round(time.perf_counter() - self.started, 3)
        self.history.append(entry)
        if entry['eval_accuracy'] is not None:
          last_eval = f'{entry["eval_accuracy"]:.3f}'
        bar.update(1)
        bar.set_postfix(
          loss=f'{entry["train_loss"]:.3f}',
          acc=f'{entry["train_accuracy"]:.3f}',
          eval_acc=last_eval,
        )
        self.checkpoint(round_num)
    return self.report()

  def _progress_bar(self):
    return _tqdm()(
      total=self.args.rounds,
      initial=min(self.start, self.args.rounds),
      desc=_run_name(self.args),
      unit='round',
      disable=not self.args.progress,
      file=sys.stderr,
    )

  def _prefetch(self, round_num):
    """Round `round_num`'s cohort on its way to the devices; None past the
    last round."""
    if round_num > self.args.rounds:
      return None
    return self.process.prefetch(self.sample_round(round_num))

  def train_round(
    self, round_num: int, cohort: algorithms.Cohort
  ) -> tuple[dict, algorithms.Cohort | None]:
    """Trains round `round_num` on its prefetched `cohort`.

    Returns:
      The round's training metrics as a history entry, and the next round's
      cohort, prefetched while this round runs.
    """
    state, metrics = self.process.next(self.state, cohort)
    next_cohort = self._prefetch(round_num + 1)  # Overlaps the round.
    self.state = state
    train = jax.device_get(metrics['client_work']['train'])
    return {
      'round': round_num,
      'train_loss': float(train['loss']),
      'train_accuracy': float(train['accuracy']),
      'train_num_examples': int(train['num_examples']),
    }, next_cohort

  def evaluate(self, round_num: int) -> dict:
    """`eval_loss` and `eval_accuracy` of the global model on the held-out
    set every `--eval-every` rounds and at the last; None otherwise or
    without a held-out set."""
    due = round_num % self.args.eval_every == 0 or round_num == self.args.rounds
    if self.evaluator is None or not due:
      return {'eval_loss': None, 'eval_accuracy': None}
    loss, accuracy = self.evaluator(self.process.get_model_weights(self.state))
    return {'eval_loss': loss, 'eval_accuracy': accuracy}

  def checkpoint(self, round_num: int) -> None:
    """Every `--checkpoint-every` rounds and at the last: the history, then
    the checkpoint, each replaced atomically. A run killed between the two
    resumes from the older checkpoint and drops the newer entries."""
    if round_num % self.args.checkpoint_every and (
      round_num != self.args.rounds
    ):
      return
    _write_history(self.output_dir, vars(self.args), self.history)
    checkpoint_lib.save(
      self.checkpoint_path, {'round': np.int32(round_num), 'state': self.state}
    )

  def report(self) -> dict:
    """Writes history.json, history.csv and plot.png and prints the summary
    table; returns the last round's history entry."""
    _write_history(self.output_dir, vars(self.args), self.history)
    _plot(os.path.join(self.output_dir, 'plot.png'), self.history)
    print(
      _table(self.history, time.perf_counter() - self.started, self.output_dir)
    )
    return self.history[-1]


def run(args) -> dict:
  """Runs the simulation that `args` (parsed flags) describe.

  Returns:
    The last round's history entry.
  """
  return Experiment.setup(args).run()


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
    print(
      f'jaxclient: error: the command needs {e.name}; install jaxclient[sim].',
      file=sys.stderr,
    )
    return 2
  return 0
