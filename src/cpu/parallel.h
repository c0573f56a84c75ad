// A minimal parallel-for over independent tasks (std::thread, dynamic scheduling).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace flashattn::detail::cpu {

inline int resolve_threads(int requested) {
  if (requested > 0) return requested;
  // Read once: glibc answers hardware_concurrency() by reading /sys, some µs a call.
  static const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return hardware;
}

// Threads for a call of `work` multiply-adds. An explicit request is honoured as given. Otherwise
// every thread must get at least ~2^18 multiply-adds (some 20 µs), or starting it costs more than
// it saves: a decode step's attention runs on the calling thread alone.
inline int threads_for(int requested, double work) {
  if (requested > 0) return requested;
  constexpr double kMinWorkPerThread = 1 << 18;
  const double useful = std::max(1.0, work / kMinWorkPerThread);
  const int available = resolve_threads(0);
  return useful >= available ? available : static_cast<int>(useful);
}

// Calls fn(task, worker) for every task in [0, n_tasks); worker is in [0, workers) and no two
// concurrent calls share a worker index, so per-worker scratch needs no locking.
template <class Fn>
void parallel_for(int64_t n_tasks, int workers, Fn&& fn) {
  if (n_tasks <= 0) return;
  workers = static_cast<int>(std::min<int64_t>(workers, n_tasks));
  if (workers <= 1) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  auto run = [&](int worker) {
    for (int64_t t = next.fetch_add(1); t < n_tasks; t = next.fetch_add(1)) fn(t, worker);
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
}

}  // namespace flashattn::detail::cpu
