// One measured configuration of a benchmark, as the JSON object every bench writes with --json PATH (a JSON array of
// these). The schema is bench/bench_json.py's (SCHEMA, FIELDS); scripts/plot_results.py reads it. Fields a bench
// does not have (a ring bench has no token count) are null; figures beyond the two headline ones go to `figures`.
#pragma once

#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace uccl::ep::bench {

inline constexpr const char* kRecordSchema = "uccl-ep-bench/1";

// A figure measured in the same run that the headline figure is read against (the transport's own rate, a bare
// ping-pong).
struct Reference {
  std::string name;
  std::optional<double> latency_us, bandwidth_gbs;
};

struct Record {
  std::string bench, mode;
  std::optional<std::string> call, dtype;
  int num_ranks = 1, ranks_per_node = 1;
  std::optional<long long> tokens, hidden, topk, experts;
  std::optional<double> latency_us, bandwidth_gbs;
  std::map<std::string, double> figures;
  nlohmann::json params = nlohmann::json::object();
  std::optional<Reference> reference;
};

namespace detail {
template <typename T>
nlohmann::json orNull(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
}  // namespace detail

// `git rev-parse HEAD` of the source tree the bench was built from, or "unknown" (a copy without .git).
inline std::string gitCommit() {
#ifdef UCCL_EP_SOURCE_DIR
  std::string out;
  if (FILE* p = popen("git -C '" UCCL_EP_SOURCE_DIR "' rev-parse HEAD 2>/dev/null", "r")) {
    char buf[128];
    while (std::fgets(buf, sizeof(buf), p) != nullptr) out += buf;
    if (pclose(p) == 0 && out.size() >= 40) return out.substr(0, 40);
  }
#endif
  return "unknown";
}

// Now, UTC, ISO 8601 to the second ("2026-11-30T05:31:37Z").
inline std::string utcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

inline nlohmann::json toJson(const Record& r, const std::string& commit, const std::string& date) {
  using detail::orNull;
  nlohmann::json ref = nullptr;
  if (r.reference) {
    ref = {{"name", r.reference->name},
           {"latency_us", orNull(r.reference->latency_us)},
           {"bandwidth_gbs", orNull(r.reference->bandwidth_gbs)}};
  }
  return {{"schema", kRecordSchema},
          {"bench", r.bench},
          {"mode", r.mode},
          {"call", orNull(r.call)},
          {"num_ranks", r.num_ranks},
          {"ranks_per_node", r.ranks_per_node},
          {"tokens", orNull(r.tokens)},
          {"hidden", orNull(r.hidden)},
          {"topk", orNull(r.topk)},
          {"experts", orNull(r.experts)},
          {"dtype", orNull(r.dtype)},
          {"latency_us", orNull(r.latency_us)},
          {"bandwidth_gbs", orNull(r.bandwidth_gbs)},
          {"figures", r.figures},
          {"params", r.params},
          {"reference", ref},
          {"git_commit", commit},
          {"date", date}};
}

// Writes every record to `path` as one JSON array; throws naming the path when it cannot.
inline void writeRecords(const std::string& path, const std::vector<Record>& records) {
  const std::string commit = gitCommit(), date = utcNow();
  nlohmann::json all = nlohmann::json::array();
  for (const Record& r : records) all.push_back(toJson(r, commit, date));
  std::ofstream f(path);
  f << all.dump(2) << "\n";
  f.close();
  if (!f) throw std::runtime_error("cannot write the results to " + path);
}

}  // namespace uccl::ep::bench
