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
uninterrupted run; a non-empty output directory is refused without
`--resume` or `--overwrite`. Bad flags, a bad data file or an unusable
output directory print one error line and exit with status 2, before any
training.

Each round's history records `num_non_finite_clients`, FedAvg's
`update_non_finite` and `model_non_finite`. A round where no client is
finite, or after which the global model (or server optimizer state) holds a
NaN or inf, has diverged: the command writes the history up to that round
and the plot, keeps the last finite checkpoint (a non-finite state is never
checkpointed), prints one error line naming the round and exits with
status 3 (`--continue-on-divergence` goes on instead). A round in which no
client trained has no loss or accuracy (null), never a silent 0.0.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import sys
import tempfile
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
from jaxclient import client as client_lib
from jaxclient import data as data_lib
from jaxclient.typing import PyTree

__all__ = [
  'CHECKPOINT',
  'EXIT_DIVERGED',
  'EXIT_USAGE',
  'Diverged',
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
  'overwrite',
  'continue_on_divergence',
)
CHECKPOINT = 'checkpoint.msgpack'
# What a run writes in its output directory (`--overwrite` removes these).
_OUTPUTS = (
  'history.json',
  '.history.json.tmp',
  'history.csv',
  'plot.png',
  CHECKPOINT,
)
#: The exit status of a bad flag, data file or output directory.
EXIT_USAGE = 2
#: The exit status of a run that stopped at a diverged round.
EXIT_DIVERGED = 3
# The optional dependencies of the command (pyproject's `sim` extra).
_SIM_MODULES = ('sklearn', 'tqdm', 'matplotlib')


class UsageError(Exception):
  """A flag, a data file or the output directory is unusable."""


class Diverged(Exception):
  """A round where no client was finite, or after which the global model is
  not finite: the run stopped there (exit status `EXIT_DIVERGED`)."""


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
    help='CPU devices to split each cohort over (default: one per core, '
    'as `import jaxclient` sets up; see JAXCLIENT_CPU_DEVICES)',
  )


def _add_output_flags(out):
  out.add_argument(
    '--name', default=None, help='run name; default <dataset>-<model>'
  )
  out.add_argument('--output-dir', default=None, help='default ./runs/<name>')
  out.add_argument('--eval-every', type=_positive_int, default=5)
  out.add_argument('--checkpoint-every', type=_positive_int, default=10)
  mode = out.add_mutually_exclusive_group()
  mode.add_argument(
    '--resume',
    action='store_true',
    help='continue from the checkpoint in --output-dir',
  )
  mode.add_argument(
    '--overwrite',
    action='store_true',
    help="replace an earlier run's outputs in --output-dir (by default a "
    'non-empty one is refused)',
  )
  out.add_argument(
    '--continue-on-divergence',
    action='store_true',
    help='go on after a round where no client is finite or the global '
    'model is not (by default the run stops, exit status 3)',
  )
  out.add_argument(
    '--no-progress',
    dest='progress',
    action='store_false',
    help='no progress bar',
  )


# -- building blocks -------------------------------------------------------


def _split_cpu(count):
  """`--cpu-devices`: `count` CPU devices instead of the one per core that
  `import jaxclient` sets up; None keeps what the import chose."""
  if count is None:
    return
  try:
    sharding.set_cpu_device_count(count)
  except RuntimeError as e:
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
  saved = _read_history(path)
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


def _read_history(path) -> dict:
  """The `{'config', 'history'}` of `path`, checked to be as `_write_history`
  writes it."""
  restart = 'run without --resume and with --overwrite to start over.'
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:  # ValueError: bad JSON or UTF-8.
    raise UsageError(
      f'--resume: {path}: not a readable history ({e}); {restart}'
    ) from e
  if not (
    isinstance(saved, dict)
    and isinstance(saved.get('config'), dict)
    and isinstance(saved.get('history'), list)
  ):
    found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
    raise UsageError(
      f'--resume: {path}: expected the "config" and "history" the command '
      f'writes, found keys {found}; {restart}'
    )
  if not all(
    isinstance(h, dict) and type(h.get('round')) is int
    for h in saved['history']
  ):
    raise UsageError(
      f'--resume: {path}: expected history entries with an int "round"; '
      f'{restart}'
    )
  return saved


def _check_output_dir(args, output_dir) -> None:
  """Read-only checks: `output_dir` is a directory or absent, and holds no
  earlier run unless `--resume` or `--overwrite`."""
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise UsageError(
      f'--output-dir: {output_dir} exists and is not a directory.'
    )
  if args.resume or args.overwrite or not os.path.isdir(output_dir):
    return
  try:
    entries = sorted(os.listdir(output_dir))
  except OSError as e:
    raise UsageError(f'--output-dir: cannot read {output_dir}: {e}.') from e
  if entries:
    shown = ', '.join(entries[:6]) + (', ...' if len(entries) > 6 else '')
    raise UsageError(
      f'--output-dir: {output_dir} is not empty (it holds {shown}); pass '
      '--resume to continue its run or --overwrite to replace its outputs.'
    )


def _prepare_output_dir(args, output_dir) -> None:
  """Creates `output_dir` and proves it writable (before any training);
  removes what a killed checkpoint write left, and with `--overwrite` the
  earlier run's outputs."""
  try:
    os.makedirs(output_dir, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=output_dir)
    os.close(fd)
    os.unlink(probe)
    checkpoint_lib.remove_temporaries(output_dir)
    for name in _OUTPUTS if args.overwrite else ():
      path = os.path.join(output_dir, name)
      if os.path.isfile(path) or os.path.islink(path):
        os.unlink(path)
  except OSError as e:
    raise UsageError(
      f'--output-dir: cannot write to {output_dir}: {e.strerror or e}.'
    ) from e


@contextlib.contextmanager
def _writing(output_dir):
  """An OSError while the outputs are written is one error line."""
  try:
    yield
  except OSError as e:
    raise UsageError(f'--output-dir: cannot write to {output_dir}: {e}.') from e


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
    datasets.validate(fed, args.data_file or args.dataset)
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
  # compilation. A batch never holds more than the largest client's
  # examples over its epochs (a larger --batch-size is that: the same
  # batches, no wasted padding).
  num_batches: int = dataclasses.field(init=False)

  def __post_init__(self):
    most = max(len(c['y']) for c in self.train) * self.local_epochs
    self.batch_size = max(1, min(self.batch_size, most))
    self.num_batches = max(1, math.ceil(most / self.batch_size))

  def __call__(self, round_num):
    rng = np.random.default_rng([self.seed, round_num])
    chosen = rng.choice(len(self.train), self.clients_per_round, replace=False)
    packed = data_lib.pack(
      [self.train[i] for i in chosen],
      self.batch_size,
      self.local_epochs,
      shuffle=True,
      seed=int(rng.integers(2**31)),
      num_batches=self.num_batches,
    )
    # `pack` fits the batch to this cohort's largest client, whose every
    # example then lies in its first batch: padding back to the round's
    # batch size gives the same arrays as packing at that size.
    if packed['mask'].shape[2] == self.batch_size:
      return packed
    return {k: self._widened(a) for k, a in packed.items()}

  def _widened(self, array):
    shape = array.shape[:2] + (self.batch_size,) + array.shape[3:]
    wide = data_lib.aligned_zeros(shape, array.dtype)
    wide[:, :, : array.shape[2]] = array
    return wide


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
  'num_non_finite_clients',
  'update_non_finite',
  'model_non_finite',
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
    # A history from an older version may lack (or have more) columns.
    writer = csv.DictWriter(f, _COLUMNS, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(history)


def _divergence(entry, cohort_size) -> str | None:
  """Why round `entry` diverged, or None when it did not."""
  if entry.get('model_non_finite'):
    return 'the global model is not finite (NaN or inf) after the round'
  non_finite = entry.get('num_non_finite_clients', 0)
  if non_finite >= cohort_size:
    return (
      f'no client of the cohort had a finite update ({non_finite} of '
      f'{cohort_size} non-finite)'
    )
  return None


def _diverged_rounds(history, cohort_size):
  """`(rounds where no client was finite, rounds after which the global
  model was not finite)`."""
  return (
    [
      h['round']
      for h in history
      if h.get('num_non_finite_clients', 0) >= cohort_size
    ],
    [h['round'] for h in history if h.get('model_non_finite')],
  )


def _plot(path, history, cohort_size):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  def values(entries, key):  # None (nothing trained) is a gap, never 0.
    return [np.nan if h.get(key) is None else h[key] for h in entries]

  rounds = [h['round'] for h in history]
  evaluated = [h for h in history if h['eval_loss'] is not None]
  diverged = sorted(set().union(*_diverged_rounds(history, cohort_size)))
  fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
  for ax, key in ((acc, 'accuracy'), (loss, 'loss')):
    # Dots: a round between two without a loss still shows.
    ax.plot(rounds, values(history, f'train_{key}'), '.-', ms=3, label='train')
    if evaluated:
      ax.plot(
        [h['round'] for h in evaluated],
        values(evaluated, f'eval_{key}'),
        'o-',
        label='held-out',
      )
    for i, r in enumerate(diverged):
      label = 'diverged (no finite client or model)' if i == 0 else None
      ax.axvline(r, color='tab:red', alpha=0.4, lw=1, label=label)
    ax.set_xlabel('round')
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _number(entry, key, cohort_size):
  """`entry[key]` to 4 decimals; why it is missing when it is None."""
  value = entry.get(key)
  if value is not None:
    return f'{value:.4f}'
  if entry.get('num_non_finite_clients', 0) >= cohort_size:
    return 'n/a (no client finite)'
  return 'n/a (no examples)'


def _round_list(rounds):
  shown = ', '.join(map(str, rounds[:5]))
  if len(rounds) > 6:
    shown += f', ..., {rounds[-1]}'
  elif len(rounds) == 6:
    shown += f', {rounds[-1]}'
  return f'{len(rounds)} ({shown})'


def _table(history, wall_s, output_dir, cohort_size):
  if not history:
    return f'rounds  0\noutputs  {output_dir}'
  last = history[-1]
  evaluated = [h for h in history if h['eval_accuracy'] is not None]
  rows = [
    ('rounds', f'{last["round"]}'),
    ('train loss (last round)', _number(last, 'train_loss', cohort_size)),
    (
      'train accuracy (last round)',
      _number(last, 'train_accuracy', cohort_size),
    ),
  ]
  no_client, no_model = _diverged_rounds(history, cohort_size)
  some = [
    h['round']
    for h in history
    if 0 < h.get('num_non_finite_clients', 0) < cohort_size
  ]
  if some:  # Those clients weighed 0; the others trained on.
    rows.append(('rounds with a non-finite client', _round_list(some)))
  if no_client:
    rows.append(('rounds where no client was finite', _round_list(no_client)))
  if no_model:
    rows.append(('rounds leaving a non-finite model', _round_list(no_model)))
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


_state_is_finite = jax.jit(client_lib.all_finite)


def _round_entry(round_num, train, update_non_finite, state_finite) -> dict:
  """Round `round_num`'s history entry from its host metrics; without
  examples trained on (e.g. no finite client), no loss or accuracy: None,
  never a silent 0.0."""
  examples = int(train['num_examples'])
  return {
    'round': round_num,
    'train_loss': float(train['loss']) if examples else None,
    'train_accuracy': float(train['accuracy']) if examples else None,
    'train_num_examples': examples,
    'num_non_finite_clients': int(train['num_non_finite_clients']),
    'update_non_finite': int(update_non_finite),
    'model_non_finite': int(not state_finite),
  }


def _postfix(entry, last_eval, cohort_size) -> dict:
  """The progress bar's numbers for round `entry`."""

  def short(key):
    return '-' if entry[key] is None else f'{entry[key]:.3f}'

  return {
    'loss': short('train_loss'),
    'acc': short('train_accuracy'),
    'eval_acc': last_eval,
    'non_finite_clients': f'{entry["num_non_finite_clients"]}/{cohort_size}',
    'update_non_finite': entry['update_non_finite'],
  }


@dataclasses.dataclass
class Experiment:
  """One invocation of the command: its flags, data, process and history.

  `Experiment.setup(args)` checks the flags and builds everything (and, with
  `--resume`, restores the checkpoint); `run()` trains the rounds after
  `start` up to `--rounds`, one `train_round` at a time, with `evaluate`
  and `checkpoint` as the flags say, then `report`s. A diverged round stops
  it (`Diverged`) unless `--continue-on-divergence`.

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
    state_finite: whether every value of `state` is finite (checked after
      each round; a non-finite state is never checkpointed).
    checkpointed: the round of the checkpoint in `output_dir` that this run
      wrote or resumed from; None when there is none.
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
  state_finite: bool = True
  checkpointed: int | None = None

  @classmethod
  def setup(cls, args) -> Experiment:
    """Devices, resume check, data, output directory checks, model, process
    and state, in that order: a bad flag, data file or output directory
    fails before anything is written or trained."""
    started = time.perf_counter()
    _split_cpu(args.cpu_devices)
    output_dir = args.output_dir or os.path.join('runs', _run_name(args))
    history = _check_resume(args, output_dir) if args.resume else []
    fed = _load_data(args)
    _check_output_dir(args, output_dir)
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
    _prepare_output_dir(args, output_dir)
    return experiment

  @property
  def checkpoint_path(self) -> str:
    return os.path.join(self.output_dir, CHECKPOINT)

  def restore(self) -> None:
    """Continues from the checkpoint: its round and state (placed on the
    process's mesh); history entries after its round are dropped. A
    corrupted checkpoint, or one past `--rounds`, is a `UsageError`."""
    try:
      saved = checkpoint_lib.restore(
        self.checkpoint_path,
        {'round': np.int32(0), 'state': jax.device_get(self.state)},
      )
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError.
      raise UsageError(f'--resume: {e}') from e
    self.start = self.checkpointed = int(saved['round'])
    if self.start > self.args.rounds:
      raise UsageError(
        f'--resume: the checkpoint in {self.output_dir} holds round '
        f'{self.start}, more than --rounds {self.args.rounds}; pass '
        f'--rounds {self.start} or more.'
      )
    self.state = sharding.put_replicated(saved['state'], self.process.mesh)
    self.history = [h for h in self.history if h['round'] <= self.start]

  def run(self) -> dict:
    """Trains the remaining rounds, then reports.

    Returns:
      The last round's history entry.

    Raises:
      Diverged: after the report, when a round diverged and
        `--continue-on-divergence` is off; the history ends with that round.
    """
    last_eval, diverged = '-', []
    cohort_size = self.args.clients_per_round
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
        bar.set_postfix(_postfix(entry, last_eval, cohort_size))
        reason = _divergence(entry, cohort_size)
        if reason:
          diverged.append((round_num, reason))
          if not self.args.continue_on_divergence:
            break
        self.checkpoint(round_num)
    result = self.report()
    self._check_diverged(diverged)
    return result

  def _check_diverged(self, diverged) -> None:
    """Raises `Diverged` for a stopped run; warns for a continued one."""
    if not diverged:
      return
    if not self.args.continue_on_divergence:
      round_num, reason = diverged[-1]
      kept = (
        'no checkpoint written'
        if self.checkpointed is None
        else f'the last finite checkpoint (round {self.checkpointed}) in '
        f'{self.output_dir}'
      )
      raise Diverged(
        f'round {round_num} diverged: {reason}; stopped with {kept}; '
        '--continue-on-divergence goes on.'
      )
    print(
      f'jaxclient: warning: {len(diverged)} round(s) diverged (first: round '
      f'{diverged[0][0]}); continued as --continue-on-divergence asked.',
      file=sys.stderr,
    )

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
      The round's training metrics as a history entry (with its non-finite
      clients, FedAvg's `update_non_finite` and whether the new state is
      finite), and the next round's cohort, prefetched while this round
      runs.
    """
    state, metrics = self.process.next(self.state, cohort)
    next_cohort = self._prefetch(round_num + 1)  # Overlaps the round.
    self.state = state
    got = jax.device_get(
      (
        metrics['client_work']['train'],
        metrics['finalizer']['update_non_finite'],
        _state_is_finite(state),
      )
    )
    self.state_finite = bool(got[2])
    return _round_entry(round_num, *got), next_cohort

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
    resumes from the older checkpoint and drops the newer entries. A state
    that is not finite is never checkpointed: the last finite one stays."""
    if round_num % self.args.checkpoint_every and (
      round_num != self.args.rounds
    ):
      return
    if not self.state_finite:
      return
    with _writing(self.output_dir):
      _write_history(self.output_dir, vars(self.args), self.history)
      checkpoint_lib.save(
        self.checkpoint_path,
        {'round': np.int32(round_num), 'state': self.state},
      )
    self.checkpointed = round_num

  def report(self) -> dict:
    """Writes history.json, history.csv and plot.png and prints the summary
    table; returns the last round's history entry ({} when none)."""
    cohort_size = self.args.clients_per_round
    with _writing(self.output_dir):
      _write_history(self.output_dir, vars(self.args), self.history)
      _plot(
        os.path.join(self.output_dir, 'plot.png'), self.history, cohort_size
      )
    wall_s = time.perf_counter() - self.started
    print(_table(self.history, wall_s, self.output_dir, cohort_size))
    return self.history[-1] if self.history else {}


def run(args) -> dict:
  """Runs the simulation that `args` (parsed flags) describe.

  Returns:
    The last round's history entry.

  Raises:
    UsageError: a bad flag, data file or output directory (nothing trained).
    Diverged: a round diverged and the run stopped there.
  """
  return Experiment.setup(args).run()


def main(argv=None) -> int:
  """Parses `argv` (default `sys.argv[1:]`), runs, returns the exit status:
  0 on success; `EXIT_USAGE` (2) with one error line on stderr for bad
  flags, data or output directory; `EXIT_DIVERGED` (3) with one error line
  naming the round when a round diverged and the run stopped."""
  try:
    run(build_parser().parse_args(argv))
  except UsageError as e:
    print(f'jaxclient: error: {e}', file=sys.stderr)
    return EXIT_USAGE
  except Diverged as e:
    print(f'jaxclient: error: {e}', file=sys.stderr)
    return EXIT_DIVERGED
  except ModuleNotFoundError as e:
    if e.name not in _SIM_MODULES:
      raise
    print(
      f'jaxclient: error: the command needs {e.name}; install jaxclient[sim].',
      file=sys.stderr,
    )
    return EXIT_USAGE
  return 0
