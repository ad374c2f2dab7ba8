"""Registry entries for schedule-free, AdEMAMix, ADOPT, MARS, cautious, LAMB/LARS,
the parameter-free methods and optax's other aliases."""

import optax

import optix
from registry import Entry

ENTRIES = [
    Entry("schedule_free_sgd", lambda: optix.schedule_free_sgd(0.1, warmup_steps=3),
          lambda: optax.contrib.schedule_free_sgd(0.1, warmup_steps=3),
          bad=[("b1", lambda: optix.schedule_free_sgd(b1=0.0)),
               ("learning_rate", lambda: optix.schedule_free_sgd(-1.0)),
               ("warmup_steps", lambda: optix.schedule_free_sgd(warmup_steps=-1)),
               ("learning_rate", lambda: optix.schedule_free_sgd(-1.0, warmup_steps=3))]),
    Entry("schedule_free_adamw", lambda: optix.schedule_free_adamw(1e-2, weight_decay=0.1),
          lambda: optax.contrib.schedule_free_adamw(1e-2, weight_decay=0.1),
          bad=[("b2", lambda: optix.schedule_free_adamw(b2=1.0)),
               ("weight_lr_power", lambda: optix.schedule_free_adamw(weight_lr_power=float("nan")))]),
    Entry("ademamix", lambda: optix.ademamix(1e-2, b3=0.999, weight_decay=0.1),
          lambda: optax.contrib.ademamix(1e-2, b3=0.999, weight_decay=0.1),
          bad=[("b3", lambda: optix.ademamix(1e-2, b3=1.0)),
               ("alpha", lambda: optix.ademamix(1e-2, alpha=-1.0))]),
    Entry("adopt", lambda: optix.adopt(1e-2), lambda: optax.contrib.adopt(1e-2),
          bad=[("b2", lambda: optix.adopt(1e-2, b2=1.5)),
               ("eps", lambda: optix.adopt(1e-2, eps=0.0))]),
    Entry("adopt_nesterov", lambda: optix.adopt(1e-2, nesterov=True, use_clipping=False),
          lambda: optax.contrib.adopt(1e-2, nesterov=True, use_clipping=False),
          # Same formulas, rounded in another order by XLA's fusions. Unclipped, the ratios
          # g/sqrt(nu_prev) reach ~1800 (updates up to 18 at lr 1e-2; clipping bounds them by
          # t^(1/4)), the updates agree to 2.4e-7 absolute, ~4e-8 of that lands in a param,
          # and the relative measure turns it into 2.4e-5 on a coordinate near zero
          # (|x| = 1.7e-3, seed 1, step 12). The clipped entry above meets 1e-5.
          tol=1e-4),
    Entry("mars_adamw", lambda: optix.mars_adamw(1e-3, weight_decay=0.1),
          bad=[("gamma", lambda: optix.mars_adamw(gamma=-1.0)),
               ("max_norm", lambda: optix.mars_adamw(max_norm=0.0))]),
    Entry("cautious_adamw", lambda: optix.cautious_adamw(1e-2, weight_decay=0.1)),
    Entry("cautious_wrapper", lambda: optix.cautious(optix.sgd(1e-2, momentum=0.9)),
          bad=[("direction_sign", lambda: optix.cautious(optix.sgd(0.1), direction_sign=0))]),
    Entry("lamb", lambda: optix.lamb(1e-2, weight_decay=0.1),
          lambda: optax.lamb(1e-2, weight_decay=0.1),
          bad=[("b1", lambda: optix.lamb(1e-2, b1=1.0))]),
    Entry("lars", lambda: optix.lars(1e-1, weight_decay=1e-2),
          lambda: optax.lars(1e-1, weight_decay=1e-2),
          bad=[("trust_coefficient", lambda: optix.lars(0.1, trust_coefficient=-1.0))]),
    Entry("prodigy", lambda: optix.prodigy(), lambda: optax.contrib.prodigy(),
          bad=[("betas", lambda: optix.prodigy(betas=(0.9, 1.0))),
               ("estim_lr0", lambda: optix.prodigy(estim_lr0=0.0))]),
    Entry("radam", lambda: optix.radam(1e-2), lambda: optax.radam(1e-2),
          bad=[("b1", lambda: optix.radam(1e-2, b1=2.0))]),
    Entry("adabelief", lambda: optix.adabelief(1e-2), lambda: optax.adabelief(1e-2)),
    Entry("yogi", lambda: optix.yogi(1e-2), lambda: optax.yogi(1e-2)),
    Entry("amsgrad", lambda: optix.amsgrad(1e-2), lambda: optax.amsgrad(1e-2)),
    Entry("adamaxw", lambda: optix.adamaxw(1e-2), lambda: optax.adamaxw(1e-2),
          bad=[("weight_decay", lambda: optix.adamaxw(1e-2, weight_decay=-1.0))]),
    Entry("signum", lambda: optix.signum(1e-2), lambda: optax.signum(1e-2)),
    Entry("adan", lambda: optix.adan(1e-2), lambda: optax.adan(1e-2)),
    Entry("cocob", lambda: optix.cocob(), lambda: optax.contrib.cocob()),
]
