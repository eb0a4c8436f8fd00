"""Writes a run's results as JSON and as a Markdown table."""

from __future__ import annotations

import json

PEER_TITLES = {
    'jaxclient': 'jaxclient (default: nothing set)',
    'jaxclient_cores': 'jaxclient (device per core, put_clients)',
    'plain_loop': 'plain loop (jit per client)',
    'drjax': 'DrJAX map_fn',
    'fedjax': 'FedJAX for_each_client',
    'tff': 'TFF 0.87 own (DATASET_REDUCE)',
    'tff_iterator': 'TFF 0.87 own (DATASET_ITERATOR)',
    'jaxclient_tff': "jaxclient_tff backend='tensorflow'",
}


def _fmt(value, spec, missing='–'):
  return missing if value is None else format(value, spec)


def _agreement(row):
  if row.get('agrees') is None:
    return '–'
  if row['peer'] == 'jaxclient':
    return 'yes'
  if 'rel_diff_vs_jaxclient' not in row:  # results from before rel. diffs
    return f"abs. diff {row['max_abs_diff_vs_jaxclient']:.0e}"
  return ('yes' if row['agrees'] else 'NO') + (
      f" ({row['rel_diff_vs_jaxclient']:.0e})")


def _percent(fraction):
  return None if fraction is None else 100 * fraction


def markdown(results: dict) -> str:
  """The tables, one per workload, plus the setting they were measured in."""
  s = results['settings']
  peak = results['matmul_peak_flops_per_s']
  core = results['versions'].get('core')
  device = core.get('device', 'cpu') if isinstance(core, dict) else 'cpu'
  lines = [
      f"Measured {results['date_utc']} UTC on "
      + ('' if device == 'cpu' else f'an {device} (host: ')
      + f"{results['machine']['cpu']}, "
      f"{results['machine']['cores']} cores, "
      f"{results['machine']['memory_gib']} GiB" + ('' if device == 'cpu'
                                                     else ')') + ' '
      
      f"(load average at start {results['machine']['loadavg_at_start'][0]:.1f})"
      f"; {s['repeats']} repeats, peers interleaved; "
      f"{s['num_batches']} batches of {s['batch_size']} per client, SGD "
      f"lr={s['learning_rate']}.",
      '',
      f"Command: `{results['command']}` ({results['wall_s'] / 60:.1f} min).",
      '',
      'XLA f32 (on GPU: default precision, TF32) matmul peak measured in the same run: median '
      f"{_fmt(peak['median'] and peak['median'] / 1e9, '.1f')} GFLOP/s, best "
      f"{_fmt(peak['max'] and peak['max'] / 1e9, '.1f')} GFLOP/s "
      f"({peak['samples']} samples); '% peak' uses the median of the samples "
      'taken in the same cell.',
      '',
  ]
  gpu = any('datasheet_tf32_fraction' in r for r in results['rows'])
  for name, workload in results['workloads'].items():
    lines += [
        f"### {name}: {workload['description']}",
        '',
        f"{workload['parameters']:,} parameters, "
        f"{workload['train_flops_per_example'] / 1e6:.2f} MFLOP to train on "
        'one example.',
        '',
        '| clients | peer | examples/s | jaxclient is × faster | median round'
        ' s | compile s | peak RSS MiB | GFLOP/s | % peak | agrees (rel. diff) |'
        + (' % TF32 datasheet | % BF16 datasheet |' if gpu else ''),
        '|---:|---|---:|---:|---:|---:|---:|---:|---:|---|'
        + ('---:|---:|' if gpu else ''),
    ]
    rows = [r for r in results['rows'] if r['workload'] == name]
    for clients in sorted({r['clients'] for r in rows}):
      cell = [r for r in rows if r['clients'] == clients]
      ref = next((r for r in cell if r['peer'] == 'jaxclient' and
                  r['status'] == 'ok'), None)
      for r in cell:
        title = PEER_TITLES.get(r['peer'], r['peer'])
        if r['status'] != 'ok':
          lines.append(f"| {clients} | {title} | {r['status']} "
                       '| | | | | | | |' + (' | |' if gpu else ''))
          continue
        speedup = (ref['examples_per_s'] / r['examples_per_s']) if ref else None
        memory = r['peak_rss_mib']
        if r.get('peak_device_mib'):
          memory = f"{memory:.0f} (GPU {r['peak_device_mib']:.0f})"
        else:
          memory = f'{memory:.0f}'
        lines.append(
            f"| {clients} | {title} | {r['examples_per_s']:,.0f} | "
            f"{_fmt(speedup, '.2f')} | {r['median_s']:.3f} | "
            f"{r['compile_s']:.1f} | {memory} | "
            f"{r['flops_per_s'] / 1e9:.1f} | "
            f"{_fmt(_percent(r.get('peak_fraction')), '.0f')}"
            f" | {_agreement(r)} |" + (
                f" {_fmt(_percent(r.get('datasheet_tf32_fraction')), '.1f')} |"
                f" {_fmt(_percent(r.get('datasheet_bf16_fraction')), '.1f')} |"
                if gpu else ''))
    lines.append('')
  lines += ['Versions: ' + '; '.join(
      f'{env}: ' + (', '.join(f'{k} {v}' for k, v in info.items())
                    if isinstance(info, dict) else info)
      for env, info in results['versions'].items()), '']
  return '\n'.join(lines)


def write(results: dict, stem: str) -> tuple[str, str]:
  """Writes `stem.json` and `stem.md`; returns their paths."""
  with open(stem + '.json', 'w') as f:
    json.dump(results, f, indent=1)
  with open(stem + '.md', 'w') as f:
    f.write(markdown(results))
  return stem + '.json', stem + '.md'
