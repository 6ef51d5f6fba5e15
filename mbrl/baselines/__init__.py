"""Published per-seed scores that `python -m mbrl.report` puts beside a sweep's runs (data only).

- atari100k.csv (method, task, seed, score, source): DreamerV3 (danijar/dreamerv3 scores/atari100k-dreamerv3.json.gz,
  each seed scored by the window rule of envs/scores.py: the mean of the episode returns logged in the last 10k
  of the 400k frames), STORM (weipu-zhang/STORM results/storm.json), DIAMOND (eloialonso/diamond
  results/data/DIAMOND.json), IRIS (eloialonso/iris results/data/IRIS.json), Delta-IRIS (vmicheli/delta-iris
  results/atari.json); raw game scores, 5 seeds each.
- dmc.csv (method, benchmark, task, seed, frames, score, source): DreamerV3 and SAC (danijar/dreamerv3
  scores/dmc_{proprio,vision}-*.json.gz, the mean of the returns logged in the last 10% before each budget; x
  in env frames), TD-MPC2 and SAC (nicklashansen/tdmpc2 results/{tdmpc2,sac}/<task>.csv at 50k-1M agent steps,
  written as frames = 2 x step: their DMC wrapper repeats each action twice).
The `source` column names the repository, commit and file of every row.
"""
