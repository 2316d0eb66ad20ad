"""Chapter 13: a loss-threshold membership attack and LiRA by hand, checked against helpers.privacy; DP-SGD set up
with Opacus by hand, accounted like helpers.privacy.train_dp; Integrated Gradients by hand equal to
helpers.attributions'; and the answers that prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "a membership attack by hand": "helpers.privacy.attack_roc",
    "LiRA by hand": "helpers.privacy.lira_scores",
    "DP-SGD with Opacus by hand": "helpers.privacy.train_dp",
    "Integrated Gradients by hand": "helpers.attributions.attribute",
}

ACCURACY_AFTER = """
deleted = np.where(most_attributed(ig_exercise, K), 0.0, x_ex).astype(np.float32)
accuracy_after = float((training.torch_logits(better, deleted).argmax(1) == y_ex).mean())
"""

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "ties dropped": '''
def auc_by_pairs(scores, member):
    s_in, s_out = scores[member][:, None], scores[~member][None, :]
    return float((s_in > s_out).mean())
''',
            "ties counted as wins": '''
def auc_by_pairs(scores, member):
    s_in, s_out = scores[member][:, None], scores[~member][None, :]
    return float((s_in >= s_out).mean())
''',
            "divided by every pair of scores, not member-non-member pairs": '''
def auc_by_pairs(scores, member):
    s_in, s_out = scores[member][:, None], scores[~member][None, :]
    return float(((s_in > s_out) + 0.5 * (s_in == s_out)).sum() / len(scores) ** 2)
''',
            "non-members above members": '''
def auc_by_pairs(scores, member):
    s_in, s_out = scores[member][:, None], scores[~member][None, :]
    return float(((s_out > s_in) + 0.5 * (s_in == s_out)).mean())
''',
        },
        "right": {
            "Mann-Whitney from ranks": '''
from scipy.stats import rankdata


def auc_by_pairs(scores, member):
    ranks = rankdata(scores)  # ties share their mean rank: a tie counts half
    n_in, n_out = int(member.sum()), int((~member).sum())
    return float((ranks[member].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))
''',
            "a loop over the members": '''
def auc_by_pairs(scores, member):
    outside = scores[~member]
    wins = sum(np.sum(s > outside) + 0.5 * np.sum(s == outside) for s in scores[member])
    return float(wins / (member.sum() * len(outside)))
''',
        }},
    2: {"kind": "code",
        "wrong": {
            "no cap at 1": '''
def tpr_bound(epsilon, delta, fpr):
    return float(np.exp(epsilon) * fpr + delta)
''',
            "delta forgotten": '''
def tpr_bound(epsilon, delta, fpr):
    return min(1.0, np.exp(epsilon) * fpr)
''',
            "epsilon times the rate, not e to the epsilon": '''
def tpr_bound(epsilon, delta, fpr):
    return min(1.0, epsilon * fpr + delta)
''',
            "e to the minus epsilon": '''
def tpr_bound(epsilon, delta, fpr):
    return min(1.0, np.exp(-epsilon) * fpr + delta)
''',
        },
        "right": {
            "the two-sided form": '''
import math


def tpr_bound(epsilon, delta, fpr):
    return min(1.0, math.exp(epsilon) * fpr + delta, 1 - math.exp(-epsilon) * (1 - fpr - delta))
''',
            "with math.exp": '''
import math


def tpr_bound(epsilon, delta, fpr):
    return min(1, math.exp(epsilon) * fpr + delta)
''',
        }},
    3: {"kind": "code",
        "wrong": {
            "the k lowest attributions": '''
def most_attributed(maps, k):
    flat = maps.reshape(len(maps), -1)
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, np.argsort(flat, axis=1)[:, :k], True, axis=1)
    return mask.reshape(maps.shape)
''' + ACCURACY_AFTER,
            "the k highest over the whole batch, not per image": '''
def most_attributed(maps, k):
    return maps >= np.sort(maps.ravel())[-k]
''' + ACCURACY_AFTER,
            "k + 1 pixels": '''
def most_attributed(maps, k):
    flat = maps.reshape(len(maps), -1)
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, np.argsort(-flat, axis=1)[:, :k + 1], True, axis=1)
    return mask.reshape(maps.shape)
''' + ACCURACY_AFTER,
            "absolute attributions, not signed": '''
def most_attributed(maps, k):
    flat = np.abs(maps.reshape(len(maps), -1))
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, np.argsort(-flat, axis=1)[:, :k], True, axis=1)
    return mask.reshape(maps.shape)
''' + ACCURACY_AFTER,
            "the right pixels, but the accuracy on the untouched digits": '''
def most_attributed(maps, k):
    flat = maps.reshape(len(maps), -1)
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, np.argsort(-flat, axis=1)[:, :k], True, axis=1)
    return mask.reshape(maps.shape)


accuracy_after = float((training.torch_logits(better, x_ex).argmax(1) == y_ex).mean())
''',
        },
        "right": {
            "argpartition": '''
def most_attributed(maps, k):
    flat = maps.reshape(len(maps), -1)
    top = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask.reshape(maps.shape)
''' + ACCURACY_AFTER,
            "a threshold per image": '''
def most_attributed(maps, k):
    flat = maps.reshape(len(maps), -1)
    kth_highest = np.sort(flat, axis=1)[:, -k][:, None]
    return (flat >= kth_highest).reshape(maps.shape)
''' + ACCURACY_AFTER,
            "torch.topk": '''
import torch


def most_attributed(maps, k):
    flat = torch.as_tensor(maps).reshape(len(maps), -1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.topk(k, dim=1).indices, True)
    return mask.reshape(maps.shape).numpy()
''' + ACCURACY_AFTER,
        }},
}
