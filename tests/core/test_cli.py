"""The `jaxclient` command: the default run, resume, outputs and errors."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import jaxclient as jc
from jaxclient import cli
from jaxclient import datasets
from tests.core import children

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
TINY = ['--num-clients', '10', '--clients-per-round', '3', '--batch-size',
        '32', '--local-epochs', '1', '--no-progress']


def _history(output_dir):
  with open(os.path.join(output_dir, 'history.json')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def two_round_run(tmp_path_factory):
  """The outputs of a TINY 2-round run; tests work on copies of them
  (`_copy_of`), so that one training run serves every test that needs an
  earlier run in its output directory."""
  out = tmp_path_factory.mktemp('two_round_run') / 'run'
  assert cli.main(TINY + ['--rounds', '2', '--output-dir', str(out)]) == 0
  return out


def _copy_of(run, directory):
  """A copy of `run`'s output directory at `directory` (made)."""
  shutil.copytree(run, directory)
  return directory


def test_default_run_reaches_good_accuracy(tmp_path, capsys):
  assert cli.main(['--output-dir', str(tmp_path), '--no-progress']) == 0
  table = capsys.readouterr().out
  saved = _history(tmp_path)
  history = saved['history']
  assert saved['config']['dataset'] == 'digits'
  assert [h['round'] for h in history] == list(range(1, 101))
  assert [h['round'] for h in history if h['eval_accuracy'] is not None] == (
      list(range(5, 101, 5)))
  assert history[-1]['eval_accuracy'] >= 0.95
  assert history[-1]['train_loss'] < history[0]['train_loss'] / 3
  assert 'held-out accuracy (round 100)' in table
  assert f"{history[-1]['eval_accuracy']:.4f}" in table
  with open(tmp_path / 'history.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 100 and float(rows[-1]['eval_accuracy']) == (
      history[-1]['eval_accuracy'])
  assert (tmp_path / 'plot.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert (tmp_path / cli.CHECKPOINT).exists()


def _final_state(output_dir):
  return jc.checkpoint.read_leaves(os.path.join(output_dir, cli.CHECKPOINT))


def test_resume_reaches_the_uninterrupted_result(tmp_path, two_round_run):
  whole = str(tmp_path / 'whole')
  part = str(_copy_of(two_round_run, tmp_path / 'part'))
  assert cli.main(TINY + ['--rounds', '5', '--output-dir', whole]) == 0
  assert int(_final_state(part)["['round']"]) == 2
  assert cli.main(TINY + ['--rounds', '5', '--output-dir', part,
                          '--resume']) == 0
  a, b = _final_state(whole), _final_state(part)
  assert set(a) == set(b) and int(a["['round']"]) == 5
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  train_keys = ('round', 'train_loss', 'train_accuracy', 'train_num_examples')
  assert ([{k: h[k] for k in train_keys} for h in _history(whole)['history']]
          == [{k: h[k] for k in train_keys}
              for h in _history(part)['history']])


@pytest.mark.parametrize('argv,message', [
    (['--rounds', '0'], "argument --rounds: expected a positive int, found 0"),
    (['--seed', '-1'], 'argument --seed: expected a non-negative int, found '
     '-1'),
    (['--bogus'], 'unrecognized arguments: --bogus'),
    (['--client-lr', 'fast'],
     "argument --client-lr: expected a positive number, found 'fast'"),
    (['--model', 'transformer'], "argument --model: invalid choice"),
    (['--dataset', 'npz'], '--dataset npz needs --data-file PATH.'),
    (['--clients-per-round', '500'], '--clients-per-round: expected at most '
     'the 100 clients of the data set, found 500'),
    (['--num-clients', '1000'], 'num_clients: 1000 clients of at least 2 '
     'examples need 2000 examples, found 1438'),
    (['--resume'], '--resume: no checkpoint in'),
])
def test_bad_flags_give_one_error_line(tmp_path, capsys, argv, message):
  assert cli.main(argv + ['--output-dir', str(tmp_path / 'o')]) == 2
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1, captured.err
  assert lines[0].startswith('jaxclient: error: ')
  assert message in lines[0]


def test_resume_with_changed_flags_is_an_error(tmp_path, capsys,
                                              two_round_run):
  out = _copy_of(two_round_run, tmp_path / 'o')
  capsys.readouterr()
  assert cli.main(TINY + ['--rounds', '3', '--output-dir', str(out),
                          '--resume', '--client-lr', '0.5']) == 2
  assert capsys.readouterr().err.strip() == (
      f'jaxclient: error: --resume: flags differ from the checkpointed run in '
      f'{out}: --client-lr was 0.2, now 0.5.')
  (out / cli.CHECKPOINT).write_bytes(b'\x00garbage')
  assert cli.main(TINY + ['--rounds', '3', '--output-dir', str(out),
                          '--resume']) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f'jaxclient: error: --resume: {out}/'
                        f'{cli.CHECKPOINT}: ') and '\n' not in err, err


def test_user_npz_runs_and_bad_npz_is_one_line(tmp_path, capsys):
  rng = np.random.default_rng(0)
  clients = [{'x': rng.normal(size=(n, 5)), 'y': rng.integers(0, 3, n)}
             for n in (20, 7, 12, 30)]
  datasets.save_npz(tmp_path / 'mine.npz', clients,
                    {'x': rng.normal(size=(9, 5)), 'y': rng.integers(0, 3, 9)})
  out = str(tmp_path / 'o')
  assert cli.main(['--dataset', 'npz', '--data-file',
                   str(tmp_path / 'mine.npz'), '--clients-per-round', '2',
                   '--rounds', '2', '--no-progress', '--output-dir', out]) == 0
  assert _history(out)['history'][-1]['eval_accuracy'] is not None
  np.savez(tmp_path / 'bad.npz', x_0=np.zeros((2, 3)), y_0=np.zeros(2))
  capsys.readouterr()
  assert cli.main(['--dataset', 'npz', '--data-file',
                   str(tmp_path / 'bad.npz'), '--output-dir', out]) == 2
  assert capsys.readouterr().err.strip() == (
      f'jaxclient: error: {tmp_path / "bad.npz"}: y_0: expected integer class '
      'labels of shape (2,), found shape (2,) float64.')


_MISSING = children.scratch('missing.npz')
children.ahead('python -m jaxclient', [[
    sys.executable, '-m', 'jaxclient', '--dataset', 'npz', '--data-file',
    _MISSING]])


def test_module_entry_point_exit_status_and_no_traceback():
  (done,) = children.result('python -m jaxclient')
  assert done.returncode == 2
  assert done.stderr.strip() == (
      f'jaxclient: error: {_MISSING}: no such data file.')
  assert 'Traceback' not in done.stderr + done.stdout


def _one_error_line(err):
  lines = err.strip().splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith('jaxclient: error: '), err
  return lines[0]


def _all_finite(leaves):
  return all(np.all(np.isfinite(v)) for v in leaves.values()
             if np.issubdtype(v.dtype, np.inexact))


def test_a_diverged_run_stops_with_status_3_and_keeps_finite_outputs(
    tmp_path, capsys):
  # Server steps of 1e30 times the mean update: round 1 trains, then the
  # global weights are so large that no client of round 2 is finite.
  out = str(tmp_path)
  assert cli.main(TINY + ['--rounds', '10', '--server-lr', '1e30',
                          '--checkpoint-every', '1', '--output-dir', out]) == 3
  captured = capsys.readouterr()
  assert _one_error_line(captured.err) == (
      'jaxclient: error: round 2 diverged: no client of the cohort had a '
      'finite update (3 of 3 non-finite); stopped with the last finite '
      f'checkpoint (round 1) in {out}; --continue-on-divergence goes on.')
  history = _history(out)['history']
  assert [h['round'] for h in history] == [1, 2]
  assert history[0]['num_non_finite_clients'] == 0
  assert history[0]['update_non_finite'] == 0
  assert history[0]['train_loss'] > 0.1
  assert history[1]['num_non_finite_clients'] == 3
  assert history[1]['update_non_finite'] == 1
  assert history[1]['train_num_examples'] == 0
  # No silent 0.0: there is no loss of a round where no client trained.
  assert history[1]['train_loss'] is None
  assert history[1]['train_accuracy'] is None
  leaves = _final_state(out)
  assert int(leaves["['round']"]) == 1 and _all_finite(leaves)
  with open(tmp_path / 'history.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['num_non_finite_clients'] for r in rows] == ['0', '3']
  assert [r['update_non_finite'] for r in rows] == ['0', '1']
  assert rows[1]['train_loss'] == ''
  assert 'n/a (no client finite)' in captured.out
  assert 'rounds where no client was finite  1 (2)' in captured.out
  assert (tmp_path / 'plot.png').exists()


def test_a_non_finite_global_model_is_never_checkpointed(tmp_path, capsys):
  # Client deltas above 1 times a server step of 3e38 overflow float32.
  out = str(tmp_path)
  flags = TINY + ['--server-lr', '3e38', '--client-lr', '5',
                  '--checkpoint-every', '1', '--output-dir', out]
  assert cli.main(flags + ['--rounds', '10']) == 3
  captured = capsys.readouterr()
  assert _one_error_line(captured.err) == (
      'jaxclient: error: round 1 diverged: the global model is not finite '
      '(NaN or inf) after the round; stopped with no checkpoint written; '
      '--continue-on-divergence goes on.')
  history = _history(out)['history']
  assert [h['round'] for h in history] == [1]
  assert history[0]['model_non_finite'] == 1
  assert history[0]['num_non_finite_clients'] == 0
  assert 'rounds leaving a non-finite model  1 (1)' in captured.out
  assert not (tmp_path / cli.CHECKPOINT).exists()
  # Going on, the state never becomes finite again: still no checkpoint.
  assert cli.main(flags + ['--rounds', '3', '--overwrite',
                           '--continue-on-divergence']) == 0
  history = _history(out)['history']
  assert [h['model_non_finite'] for h in history] == [1, 1, 1]
  assert not (tmp_path / cli.CHECKPOINT).exists()


def test_continue_on_divergence_records_every_event(tmp_path, capsys):
  out = str(tmp_path)
  assert cli.main(TINY + ['--rounds', '4', '--server-lr', '1e30',
                          '--checkpoint-every', '1', '--output-dir', out,
                          '--continue-on-divergence']) == 0
  captured = capsys.readouterr()
  history = _history(out)['history']
  assert [h['round'] for h in history] == [1, 2, 3, 4]
  assert [h['num_non_finite_clients'] for h in history] == [0, 3, 3, 3]
  assert [h['update_non_finite'] for h in history] == [0, 1, 1, 1]
  assert [h['train_loss'] is None for h in history] == [False, True, True,
                                                        True]
  assert 'rounds where no client was finite  3 (2, 3, 4)' in captured.out
  assert 'train loss (last round)' in captured.out
  assert 'n/a (no client finite)' in captured.out
  assert captured.err.strip() == (
      'jaxclient: warning: 3 round(s) diverged (first: round 2); continued '
      'as --continue-on-divergence asked.')
  # The state stayed finite (updates were rejected), so it is checkpointed.
  assert int(_final_state(out)["['round']"]) == 4


def test_data_on_which_no_client_is_finite_stops_at_round_1(tmp_path, capsys):
  # Finite features so large that every client's loss overflows.
  rng = np.random.default_rng(0)
  clients = [{'x': np.full((8, 4), 3e38, np.float32),
              'y': rng.integers(0, 3, 8)} for _ in range(3)]
  datasets.save_npz(tmp_path / 'huge.npz', clients)
  out = str(tmp_path / 'o')
  assert cli.main(['--dataset', 'npz', '--data-file',
                   str(tmp_path / 'huge.npz'), '--clients-per-round', '3',
                   '--rounds', '3', '--no-progress', '--output-dir', out]) == 3
  assert _one_error_line(capsys.readouterr().err).startswith(
      'jaxclient: error: round 1 diverged: no client of the cohort had a '
      'finite update (3 of 3 non-finite); stopped with no checkpoint written')
  assert _history(out)['history'][0]['train_loss'] is None
  assert not os.path.exists(os.path.join(out, cli.CHECKPOINT))


def test_a_non_finite_client_is_counted_not_a_divergence(tmp_path, capsys):
  rng = np.random.default_rng(0)
  clients = [{'x': rng.normal(size=(8, 4)), 'y': rng.integers(0, 3, 8)}
             for _ in range(3)]
  clients[1]['x'] = np.full((8, 4), 3e38, np.float32)
  datasets.save_npz(tmp_path / 'one_huge.npz', clients)
  out = str(tmp_path / 'o')
  assert cli.main(['--dataset', 'npz', '--data-file',
                   str(tmp_path / 'one_huge.npz'), '--clients-per-round', '3',
                   '--rounds', '2', '--no-progress', '--output-dir', out]) == 0
  captured = capsys.readouterr()
  history = _history(out)['history']
  assert [h['num_non_finite_clients'] for h in history] == [1, 1]
  assert [h['train_num_examples'] for h in history] == [32, 32]
  assert all(np.isfinite(h['train_loss']) for h in history)
  assert 'rounds with a non-finite client  2 (1, 2)' in captured.out
  assert captured.err == ''


def _npz(tmp_path, name, **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize('arrays, message', [
    ({'x_0': np.zeros((3, 2)), 'y_0': np.array([0, 1, 2**31 - 1])},
     'y_0: expected labels < 10000, found 2147483647; class labels must be in '
     '0..K-1 with K <= 10000 classes (jaxclient.datasets.MAX_CLASSES), found '
     '0..2147483647.'),
    ({'x_0': np.zeros((3, 2)), 'y_0': np.array([0, 1, -1])},
     'y_0: expected labels >= 0, found -1; class labels must be in 0..K-1 '
     'with K <= 10000 classes (jaxclient.datasets.MAX_CLASSES), found -1..1.'),
    ({'x_0': np.full((3, 2), np.nan), 'y_0': np.array([0, 1, 1])},
     'x_0: expected finite features, found 6 NaN or infinite value(s).'),
])
def test_bad_labels_and_features_fail_before_training(tmp_path, capsys, arrays,
                                                      message):
  path = _npz(tmp_path, 'bad.npz', **arrays)
  out = tmp_path / 'o'
  start = time.perf_counter()
  assert cli.main(['--dataset', 'npz', '--data-file', path,
                   '--clients-per-round', '1', '--output-dir', str(out)]) == 2
  assert time.perf_counter() - start < 20
  assert _one_error_line(capsys.readouterr().err) == (
      f'jaxclient: error: {path}: {message}')
  assert not out.exists()


def _flip_a_byte(path):
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0xFF
  open(path, 'wb').write(bytes(data))


def test_resume_from_a_corrupted_checkpoint_is_one_line(tmp_path, capsys,
                                                        two_round_run):
  out = str(_copy_of(two_round_run, tmp_path / 'o'))
  _flip_a_byte(os.path.join(out, cli.CHECKPOINT))
  capsys.readouterr()
  assert cli.main(TINY + ['--rounds', '3', '--output-dir', out,
                          '--resume']) == 2
  line = _one_error_line(capsys.readouterr().err)
  assert line.startswith(
      f'jaxclient: error: --resume: {out}/{cli.CHECKPOINT}: corrupted'), line


def test_orphaned_checkpoint_temporaries_are_removed_at_the_next_start(
    tmp_path, two_round_run):
  out = _copy_of(two_round_run, tmp_path / 'o')
  (out / '.checkpoint-0123456789abcdef').write_bytes(b'half a checkpoint')
  # Resumed at its last round: the start alone, nothing left to train.
  assert cli.main(TINY + ['--rounds', '2', '--output-dir', str(out),
                          '--resume']) == 0
  assert not list(out.glob('.checkpoint-*'))
  (out / '.checkpoint-fedcba9876543210').write_bytes(b'half a checkpoint')
  assert cli.main(TINY + ['--rounds', '1', '--output-dir', str(out),
                          '--overwrite']) == 0
  assert not list(out.glob('.checkpoint-*'))


def _snapshot(directory):
  return {p.name: (p.stat().st_mtime_ns, p.read_bytes())
          for p in sorted(directory.iterdir())}


def test_an_existing_run_is_never_overwritten_silently(tmp_path, capsys,
                                                       two_round_run):
  out = _copy_of(two_round_run, tmp_path / 'o')
  before = _snapshot(out)
  capsys.readouterr()
  assert cli.main(TINY + ['--rounds', '1', '--output-dir', str(out)]) == 2
  assert _one_error_line(capsys.readouterr().err) == (
      f'jaxclient: error: --output-dir: {out} is not empty (it holds '
      'checkpoint.msgpack, history.csv, history.json, plot.png); pass '
      '--resume to continue its run or --overwrite to replace its outputs.')
  assert _snapshot(out) == before
  # --resume with fewer rounds than the checkpoint holds.
  assert cli.main(TINY + ['--rounds', '1', '--output-dir', str(out),
                          '--resume']) == 2
  assert _one_error_line(capsys.readouterr().err) == (
      f'jaxclient: error: --resume: the checkpoint in {out} holds round 2, '
      'more than --rounds 1; pass --rounds 2 or more.')
  assert _snapshot(out) == before
  assert cli.main(TINY + ['--rounds', '2', '--output-dir', str(out),
                          '--resume', '--overwrite']) == 2
  assert 'not allowed with argument' in _one_error_line(
      capsys.readouterr().err)
  assert _snapshot(out) == before
  # --overwrite replaces the old outputs: nothing of the 2-round run stays.
  assert cli.main(TINY + ['--rounds', '1', '--output-dir', str(out),
                          '--overwrite', '--checkpoint-every', '5']) == 0
  assert [h['round'] for h in _history(out)['history']] == [1]
  assert int(_final_state(out)["['round']"]) == 1
  assert _history(out)['config']['overwrite'] is True


def _truncated_history(tmp_path):
  path = tmp_path / 'o' / 'history.json'
  path.write_text('{"config": ')


def _history_without_config(tmp_path):
  path = tmp_path / 'o' / 'history.json'
  saved = json.loads(path.read_text())
  path.write_text(json.dumps({'history': saved['history']}))


@pytest.mark.parametrize('make, argv, message', [
    (lambda p: np.save(p / 'a.npy', np.zeros((3, 2))),
     ['--dataset', 'npz', '--data-file', '{tmp}/a.npy', '--output-dir',
      '{tmp}/o2'],
     '{tmp}/a.npy: not an .npz archive (a single .npy array); expected '
     'x_<client> and y_<client> arrays saved with numpy.savez.'),
    (lambda p: (p / 'file').write_text('x'), ['--output-dir', '{tmp}/file'],
     '--output-dir: {tmp}/file exists and is not a directory.'),
    (lambda p: (p / 'file').write_text('x'),
     ['--output-dir', '{tmp}/file/run'],
     '--output-dir: cannot write to {tmp}/file/run: Not a directory.'),
    (_truncated_history, ['--output-dir', '{tmp}/o', '--resume'],
     '--resume: {tmp}/o/history.json: not a readable history (Expecting '
     'value: line 1 column 12 (char 11)); run without --resume and with '
     '--overwrite to start over.'),
    (_history_without_config, ['--output-dir', '{tmp}/o', '--resume'],
     '--resume: {tmp}/o/history.json: expected the "config" and "history" '
     'the command writes, found keys [\'history\']; run without --resume '
     'and with --overwrite to start over.'),
])
def test_unusable_files_are_one_line_not_a_traceback(tmp_path, capsys, make,
                                                     argv, message,
                                                     two_round_run):
  _copy_of(two_round_run, tmp_path / 'o')
  make(tmp_path)
  capsys.readouterr()
  argv = [a.format(tmp=tmp_path) for a in argv]
  assert cli.main(TINY + ['--rounds', '3'] + argv) == 2
  assert _one_error_line(capsys.readouterr().err) == (
      'jaxclient: error: ' + message.format(tmp=tmp_path))


def test_a_huge_batch_size_trains_the_same_as_the_largest_client(tmp_path):
  fed = datasets.digits(10, 0.5, seed=0)
  largest = max(len(c['y']) for c in fed.train)
  huge, tight = str(tmp_path / 'huge'), str(tmp_path / 'tight')
  flags = TINY + ['--rounds', '2', '--local-epochs', '2']
  assert cli.main(flags + ['--batch-size', '1000000', '--output-dir',
                           huge]) == 0
  assert cli.main(flags + ['--batch-size', str(2 * largest), '--output-dir',
                           tight]) == 0
  a, b = _final_state(huge), _final_state(tight)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _poll_rounds(output_dir):
  try:
    return len(_history(output_dir)['history'])
  except (OSError, ValueError):
    return 0


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path):
  # Synthetic data: three fresh processes, none of which imports
  # scikit-learn for digits (seconds each).
  flags = TINY + ['--dataset', 'synthetic', '--rounds', '40',
                  '--checkpoint-every', '1', '--cpu-devices', '2']
  whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
  command = [sys.executable, '-m', 'jaxclient'] + flags
  env = dict(os.environ, JAX_PLATFORMS='cpu')

  def start(*more):
    return subprocess.Popen(command + list(more), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
  processes = [start('--output-dir', whole), start('--output-dir', killed)]
  reference, victim = processes
  try:
    deadline = time.monotonic() + 90
    while _poll_rounds(killed) < 3 and victim.poll() is None:
      assert time.monotonic() < deadline, 'the run never reached round 3'
      time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL, 'it ended by itself'
    trained = _poll_rounds(killed)
    assert 3 <= trained < 40
    # The resumed run overlaps the rest of the uninterrupted one.
    processes.append(start('--output-dir', killed, '--resume'))
    for p in (reference, processes[-1]):
      _, err = p.communicate(timeout=120)
      assert p.returncode == 0, err
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert not list((tmp_path / 'killed').glob('.checkpoint-*'))
  a, b = _final_state(whole), _final_state(killed)
  assert set(a) == set(b) and int(a["['round']"]) == 40
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)

  def metrics(output_dir):
    return [{k: v for k, v in h.items() if k != 'elapsed_s'}
            for h in _history(output_dir)['history']]
  assert metrics(whole) == metrics(killed)
