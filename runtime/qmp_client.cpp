#include "runtime/qmp_client.h"

#include <json/reader.h>
#include <json/writer.h>

#include <memory>

namespace mvm::runtime {
namespace {

Result<Json::Value> ParseJson(const std::string& text) {
  Json::CharReaderBuilder builder;
  std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
  Json::Value value;
  std::string errors;
  if (!reader->parse(text.data(), text.data() + text.size(), &value, &errors)) {
    return Error{"bad QMP line: " + errors};
  }
  return value;
}

std::string OneLine(const Json::Value& value) {
  Json::StreamWriterBuilder builder;
  builder["indentation"] = "";
  return Json::writeString(builder, value);
}

}  // namespace

Result<QmpClient> QmpClient::Connect(const std::string& path, Clock::time_point deadline,
                                     const std::function<bool()>& keepTrying) {
  Result<UnixLineStream> stream = UnixLineStream::Connect(path, deadline, keepTrying);
  if (!stream.ok()) return Error{"QMP " + stream.error().message};
  QmpClient client(std::move(*stream));
  Result<std::string> greeting = client.stream_.ReadLine(deadline);
  if (!greeting.ok()) return Error{"QMP greeting: " + greeting.error().message};
  Result<Json::Value> parsed = ParseJson(*greeting);
  if (!parsed.ok() || !parsed->isMember("QMP"))
    return Error{"QMP greeting: unexpected " + *greeting};
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  Result<Json::Value> caps = client.Execute("qmp_capabilities", Json::Value(),
                                            std::max(left, std::chrono::milliseconds(1)));
  if (!caps.ok()) return caps.error();
  return client;
}

Result<Json::Value> QmpClient::Execute(const std::string& command, const Json::Value& arguments,
                                       std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const uint64_t id = next_id_++;
  Json::Value request;
  request["execute"] = command;
  if (!arguments.isNull()) request["arguments"] = arguments;
  request["id"] = Json::UInt64(id);
  if (Status s = stream_.WriteAll(OneLine(request) + "\n", deadline); !s.ok()) {
    return Error{"QMP " + command + ": " + s.error().message};
  }
  for (;;) {
    Result<std::string> line = stream_.ReadLine(deadline);
    if (!line.ok()) return Error{"QMP " + command + ": " + line.error().message};
    Result<Json::Value> reply = ParseJson(*line);
    if (!reply.ok()) return Error{"QMP " + command + ": " + reply.error().message};
    if (reply->isMember("event")) continue;
    if (!(*reply)["id"].isUInt64() || (*reply)["id"].asUInt64() != id) continue;
    if (reply->isMember("error")) {
      const Json::Value& e = (*reply)["error"];
      return Error{"QMP " + command + ": " + e["class"].asString() + ": " + e["desc"].asString()};
    }
    return (*reply)["return"];
  }
}

Result<std::string> QmpClient::QueryStatus(std::chrono::milliseconds timeout) {
  Result<Json::Value> r = Execute("query-status", Json::Value(), timeout);
  if (!r.ok()) return r.error();
  if (!(*r)["status"].isString()) return Error{"QMP query-status: no status in reply"};
  return (*r)["status"].asString();
}

}  // namespace mvm::runtime
