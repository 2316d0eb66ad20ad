"""Chapter 11: the sticky split written by hand and checked against the server's answers and helpers.serving.rollout;
the sample size by hand against statsmodels and helpers.ab_testing; the mSPRT by hand against the helper; and the
answers that prove its exercise checks decide. (The canary controller is written in the open too: it has no production
twin in the course, and its test is the two rollouts it must promote and roll back.)"""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "sticky split by hand": "helpers.serving.rollout.split_label",
    "sample size by hand": "helpers.ab_testing.sample_size_two_proportions",
    "mSPRT by hand": "helpers.ab_testing.msprt_statistic",
}

EXERCISE_KEYS = '''
exercise_keys = [f"user-{i}" for i in range(5000)]
same_order_switch = switched(exercise_keys, {"stable": 90, "canary": 10}, {"stable": 50, "canary": 50})
reordered_switch = switched(exercise_keys, {"stable": 90, "canary": 10}, {"canary": 50, "stable": 50})
'''

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "counts the keys that stay": '''
def switched(keys, before, after):
    def label(split, key):
        return rollout.split_label(tuple(split.items()), rollout.key_point(key))

    return float(np.mean([label(before, key) == label(after, key) for key in keys]))
''' + EXERCISE_KEYS,
            "the labels sorted, not in the file's order": '''
def switched(keys, before, after):
    def label(split, key):
        return rollout.split_label(tuple(sorted(split.items())), rollout.key_point(key))

    return float(np.mean([label(before, key) != label(after, key) for key in keys]))
''' + EXERCISE_KEYS,
            "the change in the canary's share": '''
def switched(keys, before, after):
    return abs(list(after.values())[-1] - list(before.values())[-1]) / 100
''' + EXERCISE_KEYS,
        },
        "right": {
            "the points laid out by hand": '''
def switched(keys, before, after):
    def label(split, key):
        point, edge = rollout.key_point(key), 0.0
        for name, percent in split.items():
            edge += percent / 100
            if point < edge:
                return name
        return name

    moved = [key for key in keys if label(before, key) != label(after, key)]
    return len(moved) / len(keys)
''' + EXERCISE_KEYS,
        }},
    2: {"kind": "experiment",
        "wrong": {
            "power 0.8": "n_one_point = ab_testing.sample_size_two_proportions(p1, p1 - 0.01, alpha=0.05, power=0.8)",
            "a one-sided test (alpha doubled)": "n_one_point = ab_testing.sample_size_two_proportions(p1, p1 - 0.01, alpha=0.1, power=0.9)",
            "the arcsine effect without the factor 2": '''
h = 2 * np.arcsin(np.sqrt(p1 - 0.01)) - 2 * np.arcsin(np.sqrt(p1))
n_one_point = int(np.ceil(((stats.norm.ppf(0.975) + stats.norm.ppf(0.9)) / h) ** 2))
''',
        },
        "right": {
            "statsmodels directly": '''
n_one_point = int(np.ceil(NormalIndPower().solve_power(effect_size=proportion_effectsize(p1 - 0.01, p1), alpha=0.05,
                                                       power=0.9, ratio=1, alternative="two-sided")))
''',
            "the closed form by hand": "n_one_point = my_sample_size(p1, p1 - 0.01, alpha=0.05, power=0.9)",
        }},
    3: {"kind": "experiment",
        "wrong": {
            "the mSPRT's rate": '''
peeking_fpr = {L: ab_testing.aa_peeking_simulation(p=p1, n_per_arm=n_helper, looks=L, tests=1000, seed=SEED)["msprt"]["false_positive_rate"]
               for L in [1, 5, 20, 100]}
''',
            "the fixed-horizon rate": '''
peeking_fpr = {L: ab_testing.aa_peeking_simulation(p=p1, n_per_arm=n_helper, looks=L, tests=1000, seed=SEED)["fixed_horizon"]["false_positive_rate"]
               for L in [1, 5, 20, 100]}
''',
        },
        "right": {
            "another seed, in a comprehension": '''
peeking_fpr = {L: ab_testing.aa_peeking_simulation(p=p1, n_per_arm=n_helper, looks=L, tests=1000, seed=SEED + 1)["peeking"]["false_positive_rate"]
               for L in [1, 5, 20, 100]}
''',
        }},
}
