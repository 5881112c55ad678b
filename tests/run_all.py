"""Run each paper folder's tests in its own pytest process, then the repo-level tests.

Prints one summary line ``N passed, N failed, N skipped`` and exits non-zero when anything failed
(including a folder whose pytest run errored or collected no test).
"""
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cwd, label):
    t0 = time.time()
    # One intra-op thread unless the caller says otherwise: the tests use tiny tensors, and on a 2-core machine
    # with anything else running, OpenMP's spinning threads made some folders 10x slower (toponas: 118 s vs 10 s).
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', 'tests'], cwd=cwd, text=True, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout
    counts = {k: 0 for k in ('passed', 'failed', 'skipped', 'error')}
    tail = [line for line in out.strip().splitlines() if line.strip()]
    last = tail[-1] if tail else ''
    for n, word in re.findall(r'(\d+) (passed|failed|skipped|errors?)', last):
        counts['error' if word.startswith('error') else word] += int(n)
    ok = proc.returncode == 0
    if proc.returncode == 5:
        ok = False
        counts['error'] += 1
        last = 'no tests collected'
    if not ok:
        sys.stdout.write(out)
    print(f'[{label}] {"ok" if ok else "FAILED"} in {time.time() - t0:.1f}s: {last}', flush=True)
    return ok, counts


def main(folders):
    t0 = time.time()
    total = {k: 0 for k in ('passed', 'failed', 'skipped', 'error')}
    bad = []
    for folder in list(folders) + ['.']:
        label = 'repo' if folder == '.' else folder
        ok, counts = run(os.path.join(ROOT, folder), label)
        for k in total:
            total[k] += counts[k]
        if not ok:
            bad.append(label)
    print(f'\nwall time {time.time() - t0:.0f}s; failing: {", ".join(bad) or "none"}')
    failed = total['failed'] + total['error']
    print(f"{total['passed']} passed, {failed} failed, {total['skipped']} skipped")
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
