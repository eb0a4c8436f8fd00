"""The `jaxclient` command: the default run, resume, outputs and errors."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxclient as jc
from jaxclient import cli
from jaxclient import datasets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
TINY = ['--num-clients', '10', '--clients-per-round', '3', '--batch-size',
        '32', '--local-epochs', '1', '--no-progress']


def _history(output_dir):
  with open(os.path.join(output_dir, 'history.json')) as f:
    return json.load(f)


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


def test_resume_reaches_the_uninterrupted_result(tmp_path):
  whole, part = str(tmp_path / 'whole'), str(tmp_path / 'part')
  assert cli.main(TINY + ['--rounds', '5', '--output-dir', whole]) == 0
  assert cli.main(TINY + ['--rounds', '2', '--output-dir', part]) == 0
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


def test_resume_with_changed_flags_is_an_error(tmp_path, capsys):
  out = str(tmp_path)
  assert cli.main(TINY + ['--rounds', '1', '--output-dir', out]) == 0
  capsys.readouterr()
  assert cli.main(TINY + ['--rounds', '2', '--output-dir', out, '--resume',
                          '--client-lr', '0.5']) == 2
  assert capsys.readouterr().err.strip() == (
      f'jaxclient: error: --resume: flags differ from the checkpointed run in '
      f'{out}: --client-lr was 0.2, now 0.5.')
  (tmp_path / cli.CHECKPOINT).write_bytes(b'\x00garbage')
  assert cli.main(TINY + ['--rounds', '2', '--output-dir', out,
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


def test_module_entry_point_exit_status_and_no_traceback(tmp_path):
  done = subprocess.run(
      [sys.executable, '-m', 'jaxclient', '--dataset', 'npz', '--data-file',
       str(tmp_path / 'missing.npz')], cwd=REPO, capture_output=True,
      text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip() == (
      f'jaxclient: error: {tmp_path / "missing.npz"}: no such data file.')
  assert 'Traceback' not in done.stderr + done.stdout
