// Group-level pruning for the CPU greedy loop (kcenter_greedy_ with prune). Rows are kept in
// groups by their nearest center; each group knows its farthest member, so a pass tests whole
// groups with the triangle inequality before it tests rows. Once the coreset covers the data's
// modes (a few hundred centers on feature-like data), a new center typically lies near one or
// two groups: the pass then touches a few hundred rows instead of testing every row, and the
// farthest row overall is the farthest of the groups' farthest members.
//
// Exactness: a group's radius r (its farthest member's distance) bounds every member's m, so
// Pruning::out_of_reach(center_distance, r) implies the row test out_of_reach(center_distance,
// m) of cpu/kcenter_pass.h for each member: a skipped group holds only rows that the row test
// skips, and the row-pruned pass selects what the brute-force pass selects.
//
// While most rows still need reading (iid data, the first centers) the sequential row-pruned
// pass is faster (rows in memory order); kcenter_greedy.cpp switches between the two.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include <torch/csrc/stable/ops.h>

#include "cpu/kcenter_pass.h"

namespace anomaly_kernels::cpu {

// A row and its distance to the coreset; the farther of two is the one with the larger
// distance, ties going to the smaller index (as the brute-force argmax).
struct RowDistance {
  float distance = -1.0f;
  int64_t index = INT64_MAX;
};
inline bool farther(const RowDistance& a, const RowDistance& b) {
  return a.distance > b.distance || (a.distance == b.distance && a.index < b.index);
}

class CenterGroups {
 public:
  // Groups rows by nearest (positions < capacity; -1: no center yet) with their farthest
  // members from min_distances. Rebuilt at every call of the operator: O(n).
  CenterGroups(const int32_t* nearest, const float* min_distances, int64_t n, int64_t capacity)
      : members_(capacity), farthest_(capacity) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t p = nearest[i];
      STD_TORCH_CHECK(p < capacity, "nearest[", i, "] must be a coreset position below ", capacity,
                      ", got ", p);
      std::vector<uint32_t>& group = p >= 0 ? members_[p] : unassigned_;
      group.push_back(static_cast<uint32_t>(i));
      if (p >= 0) farthest_[p] = more_distant({min_distances[i], i}, farthest_[p]);
    }
  }

  // One pass with the center at coreset position t (its row given as center_row, its
  // distances to the centers at positions < t in center_distance); returns the farthest row,
  // or nothing (and changes nothing) when the groups in the center's reach hold more than
  // max_rows rows, for which the sequential pass is faster.
  template <typename S>
  std::optional<Farthest> pass(const S* features, int64_t d, float* min_distances, int32_t* nearest,
                               const float* center_row, const float* center_distance, int32_t t,
                               int64_t max_rows) {
    // Work items: the unassigned rows (always tested) and the groups the center may reach,
    // cut into chunks so that one large group still spreads over all threads.
    items_.clear();
    add_items(-1, unassigned_.size());
    for (int32_t p = 0; p < t; ++p) {
      if (members_[p].empty()) continue;
      if (!Pruning<float>::out_of_reach(center_distance[p], farthest_[p].distance))
        add_items(p, members_[p].size());
    }
    int64_t rows = 0;
    for (const Item& item : items_) rows += static_cast<int64_t>(item.end - item.begin);
    if (rows > max_rows) return std::nullopt;
    torch::stable::parallel_for(0, static_cast<int64_t>(items_.size()), 1, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k)
        scan(items_[k], features, d, min_distances, nearest, center_row, center_distance, t);
    });
    regroup(t, min_distances);
    RowDistance overall = farthest_in(unassigned_, min_distances);
    for (int32_t p = 0; p <= t; ++p) overall = more_distant(farthest_[p], overall);
    return Farthest{static_cast<double>(overall.distance), overall.index, rows};
  }

 private:
  static constexpr size_t kRowsPerItem = 2048;

  struct Item {
    int32_t group;       // -1: the unassigned rows
    size_t begin, end;   // members [begin, end) of the group
    size_t kept = 0;     // members that stay, compacted to [begin, begin + kept)
    RowDistance farthest_kept;
    std::vector<uint32_t> moved;  // members now nearest to the new center, in member order
  };

  static RowDistance more_distant(const RowDistance& a, const RowDistance& b) {
    return farther(a, b) ? a : b;
  }

  std::vector<uint32_t>& group(int32_t p) { return p >= 0 ? members_[p] : unassigned_; }

  static RowDistance farthest_in(const std::vector<uint32_t>& rows, const float* min_distances) {
    RowDistance best;
    for (const uint32_t i : rows) best = more_distant({min_distances[i], i}, best);
    return best;
  }

  void add_items(int32_t p, size_t size) {
    for (size_t begin = 0; begin < size; begin += kRowsPerItem)
      items_.push_back({p, begin, std::min(size, begin + kRowsPerItem)});
  }

  // Tests and updates the item's rows; keeps the staying ones compacted at the item's start.
  template <typename S>
  void scan(Item& item, const S* features, int64_t d, float* min_distances, int32_t* nearest,
            const float* center_row, const float* center_distance, int32_t t) {
    std::vector<uint32_t>& rows = group(item.group);
    for (size_t k = item.begin; k < item.end; ++k) {
      const uint32_t i = rows[k];
      float m = min_distances[i];
      const bool skip =
          item.group >= 0 && Pruning<float>::out_of_reach(center_distance[item.group], m);
      if (!skip) {
        const float dist = std::sqrt(squared_distance(features + i * d, center_row, d));
        if (dist < m) {
          min_distances[i] = dist;
          nearest[i] = t;
          item.moved.push_back(i);
          continue;
        }
      }
      rows[item.begin + item.kept++] = i;
      item.farthest_kept = more_distant({m, i}, item.farthest_kept);
    }
  }

  // Closes the gaps the scans left in their groups, refreshes those groups' farthest members
  // and forms group t from the moved rows (items in order: deterministic).
  void regroup(int32_t t, const float* min_distances) {
    size_t i = 0;
    while (i < items_.size()) {
      const int32_t p = items_[i].group;
      std::vector<uint32_t>& rows = group(p);
      size_t size = 0;
      RowDistance farthest;
      for (; i < items_.size() && items_[i].group == p; ++i) {
        const Item& item = items_[i];
        if (size != item.begin)  // kept rows move towards the front (never overlapping ahead)
          std::copy(rows.begin() + item.begin, rows.begin() + item.begin + item.kept, rows.begin() + size);
        size += item.kept;
        farthest = more_distant(item.farthest_kept, farthest);
        members_[t].insert(members_[t].end(), item.moved.begin(), item.moved.end());
      }
      rows.resize(size);
      if (p >= 0) farthest_[p] = farthest;
    }
    // Members in row order keep later scans of the group moving forward through memory.
    std::sort(members_[t].begin(), members_[t].end());
    farthest_[t] = farthest_in(members_[t], min_distances);
  }

  std::vector<std::vector<uint32_t>> members_;  // [position] rows whose nearest center it is
  std::vector<RowDistance> farthest_;           // [position] the group's farthest member
  std::vector<uint32_t> unassigned_;            // rows with no center yet
  std::vector<Item> items_;
};

}  // namespace anomaly_kernels::cpu
