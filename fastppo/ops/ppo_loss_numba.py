"""The fused PPO loss compiled by Numba: the CPU fallback when the native extension is missing, the
same single pass as csrc/ops/ppo_loss/ppo_loss_cpu.cpp. Imported lazily (importing numba takes a while)."""

from __future__ import annotations

import math

import numba


@numba.njit(cache=True, nogil=True, inline="always")
def _clamp(x, lo, hi):
    # ppo_clamp in csrc/ops/ppo_loss/ppo_loss_math.h (and torch.clamp): NaN passes through. Python's min/max in
    # Numba order NaN differently from these selects, so every select below is spelled as in C++.
    return lo if x < lo else (hi if x > hi else x)


@numba.njit(cache=True, nogil=True)
def _loss_kernel(new_logp, old_logp, advantages, new_values, old_values, returns, entropy, kl, has_kl, clip_coef,
                 vf_coef, ent_coef, vf_clip, clip_values, normalize, kl_coef, out, grads):
    # ppo_sample in csrc/ops/ppo_loss/ppo_loss_math.h, select for select, so NaN and inf take the same branches.
    n = new_logp.shape[0]
    mean, denom = 0.0, 1.0
    if normalize:  # shifted sums, as ppo_adv_moments in csrc/ops/ppo_loss/ppo_loss_math.h
        shift, s1, s2 = advantages[0], 0.0, 0.0
        for i in range(n):
            d = advantages[i] - shift
            s1 += d
            s2 += d * d
        mean = shift + s1 / n
        var = (s2 - s1 * s1 / n) / (n - 1) if n > 1 else 0.0
        denom = math.sqrt(var if var > 0.0 else 0.0) + 1e-8
    lo, hi = 1.0 - clip_coef, 1.0 + clip_coef
    sp = sv = se = sk = sa = sc = 0.0
    for i in range(n):
        logratio = new_logp[i] - old_logp[i]
        ratio = math.exp(logratio)
        a = (advantages[i] - mean) / denom
        surr1 = ratio * a
        surr2 = _clamp(ratio, lo, hi) * a
        # min picks surr1: gradient -A * ratio; it picks surr2: no gradient (the clamp passes one only
        # inside [lo, hi], where surr1 == surr2); a tie: half through each side, as torch.minimum does.
        sp += -(surr1 if surr1 < surr2 else surr2)
        g = -a * ratio
        if surr1 < surr2:
            pass
        elif surr1 > surr2:
            g = 0.0
        elif not (lo <= ratio <= hi):
            g *= 0.5
        grads[i] = g / n
        sa += (ratio - 1.0) - logratio
        sc += 1.0 if abs(ratio - 1.0) > clip_coef else 0.0
        diff = new_values[i] - returns[i]
        sq = diff * diff
        if clip_values:
            step = new_values[i] - old_values[i]
            diff_c = old_values[i] + _clamp(step, -vf_clip, vf_clip) - returns[i]
            sq_c = diff_c * diff_c
            g_c = diff_c if -vf_clip <= step <= vf_clip else 0.0
            sv += 0.5 * (sq if sq > sq_c else sq_c)
            g = diff if sq > sq_c else (g_c if sq < sq_c else 0.5 * (diff + g_c))
        else:
            sv += 0.5 * sq
            g = diff
        grads[n + i] = vf_coef * g / n
        se += entropy[i]
        if has_kl:
            sk += kl[i]
    grads[2 * n], grads[2 * n + 1] = -ent_coef / n, kl_coef / n
    policy, value, ent, kl_mean = sp / n, sv / n, se / n, sk / n
    out[0] = policy + vf_coef * value - ent_coef * ent + kl_coef * kl_mean
    out[1], out[2], out[3], out[4], out[5] = policy, value, ent, sa / n, sc / n


def ppo_loss_numba(inputs, config, out, grads):
    """Checked CPU torch tensors in, as ppo_loss passes them (a ``LossInputs`` and a ``LossConfig``,
    fastppo/ops/ppo_loss.py); writes out (6,) and grads (2B + 2,)."""
    x, c = inputs, config

    def host(t):
        return t.detach().numpy()

    _loss_kernel(new_logp=host(x.new_logp), old_logp=host(x.old_logp), advantages=host(x.advantages),
                 new_values=host(x.new_values), old_values=host(x.old_values), returns=host(x.returns),
                 entropy=host(x.entropy),
                 kl=host(x.new_logp if x.kl is None else x.kl),  # a same-typed placeholder when absent
                 has_kl=x.kl is not None, clip_coef=float(c.clip_coef), vf_coef=float(c.vf_coef),
                 ent_coef=float(c.ent_coef), vf_clip=0.0 if c.vf_clip is None else float(c.vf_clip),
                 clip_values=c.vf_clip is not None, normalize=bool(c.normalize_advantages),
                 kl_coef=float(c.kl_coef), out=out.numpy(), grads=grads.numpy())


__all__ = ["ppo_loss_numba"]
