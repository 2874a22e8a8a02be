// Helpers shared by the verbs backend tests: options, env, and transports built and connected over a FakeVerbs.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "fake_verbs.hpp"
#include "transport/verbs/verbs_transport.hpp"
#include "uccl_ep/transport/transport.hpp"
#include "uccl_ep/util/env.hpp"
#include "uccl_ep/util/error.hpp"

namespace uccl::ep::transport::verbs::testing {

inline TransportOptions options(int rank, int world, int thread = 0) {
  TransportOptions o;
  o.kind = "verbs";
  o.rank = rank;
  o.world = world;
  o.thread_index = thread;
  return o;
}

inline std::unique_ptr<Transport> make(FakeVerbs& f, int rank, int world, const Env& env = Env{}, int thread = 0) {
  return createVerbsTransportWithApi(options(rank, world, thread), f.api(), env);
}

inline void connectAll(const std::vector<Transport*>& ts) {
  std::vector<Blob> addrs;
  for (Transport* t : ts) addrs.push_back(t->address());
  for (Transport* t : ts) t->connect(addrs);
}

// The error text of `fn`, or "" when it did not throw uccl::ep::Error.
template <typename Fn>
std::string errorOf(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The QPs the fake created, in creation order (transport a's world QPs, then b's ...).
inline std::vector<FakeQp*> liveQps(FakeVerbs& f) {
  std::vector<FakeQp*> v;
  for (FakeQp* q : f.qps()) {
    if (!q->destroyed) v.push_back(q);
  }
  return v;
}

inline const Transition* transitionTo(const FakeQp* q, ibv_qp_state s) {
  for (const Transition& t : q->transitions) {
    if (t.attr.qp_state == s) return &t;
  }
  return nullptr;
}

}  // namespace uccl::ep::transport::verbs::testing
