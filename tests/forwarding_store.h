#pragma once
// ForwardingStore: a Store that passes every call to another one. Tests derive from it to
// watch or interfere with the few calls they care about (a crash at a write, counting reads).

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "controller/store.h"

namespace mvm::testing {

class ForwardingStore : public controller::Store {
 public:
  using Event = controller::Event;
  using Instance = controller::Instance;
  using InstanceKey = controller::InstanceKey;

  explicit ForwardingStore(std::unique_ptr<Store> real) : real_(std::move(real)) {}

  std::vector<Instance> ListInstances() const override { return real_->ListInstances(); }
  std::vector<Instance> ListPool(const std::string& tenant,
                                 const std::string& pool) const override {
    return real_->ListPool(tenant, pool);
  }
  std::optional<Instance> GetInstance(const InstanceKey& key) const override {
    return real_->GetInstance(key);
  }
  void ForEachInPool(const std::string& tenant, const std::string& pool,
                     const std::function<void(const Instance&)>& fn) const override {
    real_->ForEachInPool(tenant, pool, fn);
  }
  std::vector<std::pair<std::string, std::string>> ListPools() const override {
    return real_->ListPools();
  }
  size_t InstanceCount() const override { return real_->InstanceCount(); }
  Status PutInstance(const Instance& instance) override { return real_->PutInstance(instance); }
  Status PutInstanceQueued(const Instance& instance) override {
    return real_->PutInstanceQueued(instance);
  }
  Status DeleteInstance(const InstanceKey& key) override { return real_->DeleteInstance(key); }
  std::string NewInstanceName(const std::string& tenant, const std::string& pool) override {
    return real_->NewInstanceName(tenant, pool);
  }
  Result<int64_t> Allocate(const std::string& kind, const InstanceKey& owner, int64_t lo,
                           int64_t hi) override {
    return real_->Allocate(kind, owner, lo, hi);
  }
  std::map<std::string, int64_t> AllocationsOf(const InstanceKey& owner) const override {
    return real_->AllocationsOf(owner);
  }
  Status ReleaseAll(const InstanceKey& owner) override { return real_->ReleaseAll(owner); }
  void RecordEvent(const Event& event) override { real_->RecordEvent(event); }
  std::vector<Event> Events(const std::string& objectKind,
                            const std::string& objectKey) const override {
    return real_->Events(objectKind, objectKey);
  }
  Status Audit(const std::string& tenant, const std::string& actor, const std::string& action,
               const std::string& object, const std::string& detail) override {
    return real_->Audit(tenant, actor, action, object, detail);
  }
  void AuditQueued(const std::string& tenant, const std::string& actor, const std::string& action,
                   const std::string& object, const std::string& detail) override {
    real_->AuditQueued(tenant, actor, action, object, detail);
  }
  std::vector<controller::AuditEntry> AuditLog(const std::string& tenant) const override {
    return real_->AuditLog(tenant);
  }
  controller::AuditVerification VerifyAudit(const std::string& tenant) const override {
    return real_->VerifyAudit(tenant);
  }

 protected:
  Store& real() { return *real_; }

 private:
  std::unique_ptr<Store> real_;
};

}  // namespace mvm::testing
