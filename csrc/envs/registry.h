// The one list of built-in envs. Adding an env: its physics header (envs/<env>.h), one line in
// FASTPPO_BUILTIN_ENVS below (and its include above it), its tests. The enum, dispatch_env, the names
// and what Python learns through _core.env_info all come from this list.
#pragma once

#include <cstdint>

#include "envs/acrobot.h"
#include "envs/cartpole.h"
#include "envs/mountain_car.h"
#include "envs/mountain_car_continuous.h"
#include "envs/pendulum.h"

// X(physics struct), in the order Python lists the envs.
#define FASTPPO_BUILTIN_ENVS(X) \
  X(CartPole)                   \
  X(Acrobot)                    \
  X(MountainCar)                \
  X(MountainCarContinuous)      \
  X(Pendulum)

namespace fastppo {

#define FASTPPO_ENV_ENUM(E) E,
enum class EnvId : uint8_t { FASTPPO_BUILTIN_ENVS(FASTPPO_ENV_ENUM) };
#undef FASTPPO_ENV_ENUM

#define FASTPPO_ENV_ID(E) EnvId::E,
constexpr EnvId kEnvIds[] = {FASTPPO_BUILTIN_ENVS(FASTPPO_ENV_ID)};
#undef FASTPPO_ENV_ID

// Calls fn(E{}) with the physics struct of `id`.
template <typename Fn>
decltype(auto) dispatch_env(EnvId id, Fn&& fn) {
  switch (id) {
#define FASTPPO_ENV_CASE(E) \
  case EnvId::E:            \
    return fn(E{});
    FASTPPO_BUILTIN_ENVS(FASTPPO_ENV_CASE)
#undef FASTPPO_ENV_CASE
  }
  __builtin_unreachable();  // every EnvId has its case
}

// The env's gymnasium id ("CartPole-v1").
inline const char* env_name(EnvId id) {
  return dispatch_env(id, [](auto env) { return decltype(env)::kId; });
}

}  // namespace fastppo
