// YAML/JSON reading: YAML 1.2 core-schema typing and the positions every later error relies on.

#include "manifests/yaml_reader.h"

#include <gtest/gtest.h>

#include <cmath>

namespace mvm::manifests {
namespace {

Json::Value ReadOne(std::string_view text) {
  ReadResult result = ReadDocuments("t.yaml", text, Format::kYaml);
  EXPECT_TRUE(result.diagnostics.empty()) << result.diagnostics.at(0).ToString();
  EXPECT_EQ(result.documents.size(), 1u);
  return result.documents.empty() ? Json::Value() : result.documents[0].root;
}

TEST(YamlReader, PlainScalarsFollowTheCoreSchema) {
  Json::Value v = ReadOne(R"(n1: null
n2: ~
n3:
b1: true
b2: False
i1: 42
i2: -7
i3: 0x1F
i4: 0o17
f1: 1.5
f2: 1e3
f3: .inf
f4: -.inf
s1: yes
s2: "42"
s3: '3.0'
s4: 12abc
s5: !!str 7
big: 99999999999999999999
)");
  EXPECT_TRUE(v["n1"].isNull());
  EXPECT_TRUE(v["n2"].isNull());
  EXPECT_TRUE(v["n3"].isNull());
  EXPECT_TRUE(v["b1"].isBool() && v["b1"].asBool());
  EXPECT_TRUE(v["b2"].isBool() && !v["b2"].asBool());
  EXPECT_EQ(v["i1"].asInt64(), 42);
  EXPECT_TRUE(v["i1"].isIntegral());
  EXPECT_EQ(v["i2"].asInt64(), -7);
  EXPECT_EQ(v["i3"].asInt64(), 31);
  EXPECT_EQ(v["i4"].asInt64(), 15);
  EXPECT_TRUE(v["f1"].isDouble());
  EXPECT_DOUBLE_EQ(v["f1"].asDouble(), 1.5);
  EXPECT_DOUBLE_EQ(v["f2"].asDouble(), 1000.0);
  EXPECT_TRUE(std::isinf(v["f3"].asDouble()) && v["f3"].asDouble() > 0);
  EXPECT_TRUE(std::isinf(v["f4"].asDouble()) && v["f4"].asDouble() < 0);
  EXPECT_EQ(v["s1"].asString(), "yes");  // YAML 1.1 booleans are strings in 1.2
  EXPECT_TRUE(v["s2"].isString());
  EXPECT_TRUE(v["s3"].isString());
  EXPECT_TRUE(v["s4"].isString());
  EXPECT_TRUE(v["s5"].isString());
  EXPECT_TRUE(v["big"].isString());  // never silently wrapped
}

TEST(YamlReader, RecordsValueAndKeyPositions) {
  Json::Value v = ReadOne("a:\n  b: [1, 2]\n  c:   x\n");
  EXPECT_EQ(PositionOf(v["a"]["b"]).line, 2);
  EXPECT_EQ(PositionOf(v["a"]["b"]).column, 6);
  EXPECT_EQ(PositionOf(v["a"]["b"][1]).column, 10);
  EXPECT_EQ(PositionOf(v["a"]["c"]).column, 8);
  EXPECT_EQ(KeyPositionOf(v["a"]["c"]).column, 3);
  Json::Value copy = v["a"];
  EXPECT_EQ(PositionOf(copy["c"]).line, 3);  // positions survive copies
}

TEST(YamlReader, SplitsDocumentsAndSkipsEmptyOnes) {
  ReadResult result = ReadDocuments("t.yaml", "---\na: 1\n---\n---\nb: 2\n...\n", Format::kYaml);
  ASSERT_EQ(result.documents.size(), 2u);
  EXPECT_EQ(result.documents[0].start.line, 2);  // its content, not its `---`
  EXPECT_EQ(result.documents[1].root["b"].asInt(), 2);
}

TEST(YamlReader, ExpandsAliases) {
  Json::Value v = ReadOne("base: &b {vcpus: 2}\nother: *b\n");
  EXPECT_EQ(v["other"]["vcpus"].asInt(), 2);
}

TEST(YamlReader, KeepsDocumentsBeforeASyntaxError) {
  ReadResult result = ReadDocuments("t.yaml", "a: 1\n---\nb: [\n", Format::kYaml);
  EXPECT_EQ(result.documents.size(), 1u);
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].file, "t.yaml");
}

TEST(YamlReader, ComplexKeysAreRefused) {
  ReadResult result = ReadDocuments("t.yaml", "? [a, b]\n: 1\n", Format::kYaml);
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].message, "mapping keys must be scalars");
}

TEST(YamlReader, JsonPositions) {
  ReadResult result = ReadDocuments("t.json", "{\n  \"a\": {\"b\": 7}\n}", Format::kJson);
  ASSERT_EQ(result.documents.size(), 1u);
  EXPECT_EQ(PositionOf(result.documents[0].root["a"]["b"]).line, 2);
  EXPECT_EQ(PositionOf(result.documents[0].root["a"]["b"]).column, 14);
}

TEST(YamlReader, JsonMustBeUtf8) {
  ReadResult result = ReadDocuments("t.json", "{\n  \"a\": \"\xC3\x28\"\n}", Format::kJson);
  EXPECT_TRUE(result.documents.empty());
  ASSERT_EQ(result.diagnostics.size(), 1u);
  EXPECT_EQ(result.diagnostics[0].line, 2);
  EXPECT_EQ(result.diagnostics[0].column, 9);
  EXPECT_EQ(result.diagnostics[0].message,
            "JSON syntax error: invalid UTF-8 (JSON text must be UTF-8)");
  EXPECT_TRUE(ReadDocuments("t.json", "{\"a\": \"\xC3\xA9\xF0\x9F\x98\x80\"}", Format::kJson)
                  .diagnostics.empty());
}

TEST(YamlReader, FormatFollowsExtension) {
  EXPECT_EQ(FormatForPath("a/b.json"), Format::kJson);
  EXPECT_EQ(FormatForPath("a/b.yaml"), Format::kYaml);
  EXPECT_EQ(FormatForPath("a/b.yml"), Format::kYaml);
}

}  // namespace
}  // namespace mvm::manifests
