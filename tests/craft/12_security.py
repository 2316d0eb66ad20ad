"""Chapter 12: a malicious checkpoint built and loaded both ways; a pickle's imports read by hand and checked against
helpers.malicious_files; a signature by hand with the same verdicts as helpers.signing; FGSM and PGD by hand equal to
helpers.adversarial's; a token bucket by hand making the server's decisions; and the answers that prove its exercise
checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "a malicious checkpoint by hand": "torch.load",
    "a pickle's imports by hand": "helpers.malicious_files.pickle_globals",
    "a signature by hand": "helpers.signing.verify_version",
    "FGSM and PGD by hand": "helpers.adversarial.pgd",
    "a token bucket by hand": "helpers.serving.ratelimit.TokenBucket",
}

VERDICTS = "\nverdicts_allowlist = {s.name: allowlisted(p) for s, p in pickled}\n"

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "a denylist of os.system and subprocess": '''
def allowlisted(program):
    found = malicious_files.pickle_globals(program)
    return not any(name in {"os.system", "posix.system", "nt.system"} or name.startswith("subprocess.") for name in found)
''' + VERDICTS,
            "any allowed import instead of all": '''
def allowlisted(program):
    return bool(malicious_files.pickle_globals(program) & SAFE_GLOBALS)
''' + VERDICTS,
            "only the first import checked": '''
def allowlisted(program):
    return sorted(malicious_files.pickle_globals(program))[0] in SAFE_GLOBALS
''' + VERDICTS,
        },
        "right": {
            "a loop with an early return": '''
def allowlisted(program):
    for name in malicious_files.pickle_globals(program):
        if name not in SAFE_GLOBALS:
            return False
    return True
''' + VERDICTS,
            "a set difference": '''
def allowlisted(program):
    return not (malicious_files.pickle_globals(program) - SAFE_GLOBALS)
''' + VERDICTS,
        }},
    2: {"kind": "experiment",
        "wrong": {
            "the burst forgotten": "queries_per_day = int(0.25 * 24 * 3600)",
            "one hour, not a day": "queries_per_day = int(0.25 * 3600 + 50)",
            "twenty keys": "queries_per_day = int(20 * (0.25 * 24 * 3600 + 50))",
            "the rate read as requests of 100 images": "queries_per_day = int(100 * 0.25 * 24 * 3600 + 50)",
        },
        "right": {
            "spelled out in seconds": "queries_per_day = 50 + round(86_400 * 0.25)",
            "simulated with the server's bucket": '''
_clock = FakeClock()
_bucket = TokenBucket(0.25, 50, clock=_clock)
queries_per_day = 0
while _clock.now <= 86_400 + 1e-6:
    _wait = _bucket.take(1)
    if _wait:
        _clock.now += _wait
    else:
        queries_per_day += 1
''',
        }},
    3: {"kind": "experiment",
        "wrong": {
            "the eps just before": '''
def _first_below(model):
    index = next((i for i, eps in enumerate(grid) if pgd_accuracy(model, eps) < 0.5), None)
    return None if index is None else grid[max(index - 1, 0)]


eps_half, eps_half_robust = _first_below(victim), _first_below(robust)
''',
            "the undefended model's answer for both": '''
eps_half = next((e for e in grid if pgd_accuracy(victim, e) < 0.5), None)
eps_half_robust = eps_half
''',
            "no attack at all": '''
eps_half = next((e for e in grid if adversarial.accuracy(victim, x_exercise, y_exercise) < 0.5), None)
eps_half_robust = next((e for e in grid if adversarial.accuracy(robust, x_exercise, y_exercise) < 0.5), None)
''',
        },
        "right": {
            "the helper called directly": '''
def _first(model):
    return next((e for e in grid
                 if adversarial.robust_accuracy(model, x_exercise, y_exercise, e, attack="pgd", seed=SEED) < 0.5), None)


eps_half, eps_half_robust = _first(victim), _first(robust)
''',
        }},
}
