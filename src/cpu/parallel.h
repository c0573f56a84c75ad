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
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
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
