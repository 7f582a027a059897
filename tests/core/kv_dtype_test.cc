// The kv_dtype axis: its text, defaults, validation, and its place in a run spec's JSON.
#include <gtest/gtest.h>

#include "core/kv_dtype.h"
#include "core/run_spec.h"

namespace kvgrid {
namespace {

TEST(KvDtype, ParsesNamesAndParametersToCanonicalText) {
  EXPECT_EQ(ParseKvDtype("model")->ToString(), "model");
  EXPECT_FALSE(ParseKvDtype("model")->quantized());
  auto int4 = ParseKvDtype("int4");
  ASSERT_TRUE(int4.ok());
  EXPECT_EQ(int4->bits, 4);
  EXPECT_EQ(int4->group, 32);      // KIVI's paper setting
  EXPECT_EQ(int4->residual, 128);
  EXPECT_EQ(ParseKvDtype("int2:residual=64,group=16")->ToString(), "int2:group=16,residual=64");
  EXPECT_EQ(ParseKvDtype("int8:group=32,residual=128")->ToString(), "int8");  // defaults dropped
}

TEST(KvDtype, RefusesBadTextNamingIt) {
  for (const char* bad : {"float8", "int3", "int4:group=0", "int4:residual=48", "int4:residual=0",
                          "int4:group=x", "int4:width=2", "model:group=8", ""}) {
    auto kv = ParseKvDtype(bad);
    ASSERT_FALSE(kv.ok()) << bad;
    EXPECT_NE(kv.status().message().find("kv_dtype '" + std::string(bad) + "'"), std::string::npos)
        << kv.status();
  }
}

TEST(KvDtype, GroupMustDivideTheHeadDimension) {
  EXPECT_TRUE(CheckKvDtypeFitsHead(*ParseKvDtype("int2"), 64).ok());
  auto status = CheckKvDtypeFitsHead(*ParseKvDtype("int2"), 16);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("group 32 must divide the head dimension 16"), std::string::npos);
  EXPECT_TRUE(CheckKvDtypeFitsHead(*ParseKvDtype("model"), 16).ok());
}

TEST(KvDtype, RunSpecCarriesItOnlyWhenQuantised) {
  RunSpec spec;
  EXPECT_FALSE(spec.ToJson().contains("kv_dtype"));  // keys of runs stored before it unchanged
  spec.kv_dtype = *ParseKvDtype("int4:group=16,residual=32");
  auto json = spec.ToJson();
  EXPECT_EQ(json["kv_dtype"], "int4:group=16,residual=32");
  auto back = RunSpec::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->kv_dtype, spec.kv_dtype);
  json["kv_dtype"] = "int5";
  auto bad = RunSpec::FromJson(json);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("run spec.kv_dtype 'int5'"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace kvgrid
