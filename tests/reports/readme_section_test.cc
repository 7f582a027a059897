#include "reports/readme_section.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace kvgrid::reports {
namespace {

const char* kReadme =
    "# Project\r\n\nIntro with trailing spaces   \n\n"
    "<!-- kvgrid:results -->\nold table\nmore old\n<!-- /kvgrid:results -->\n"
    "\n## After\n\n<!-- kvgrid:other -->\nkeep me\n<!-- /kvgrid:other -->\nno newline at end";

TEST(ReadmeSectionTest, ReplacesOnlyTheMarkedSection) {
  auto out = ReplaceMarkedSection(kReadme, "results", "| a |\n| --- |\n| 1 |");
  ASSERT_TRUE(out.ok()) << out.status();
  std::string doc = kReadme;
  size_t b = doc.find("<!-- kvgrid:results -->") + std::string("<!-- kvgrid:results -->").size();
  size_t e = doc.find("<!-- /kvgrid:results -->");
  // Everything before and after the section is byte-identical.
  EXPECT_EQ(out->substr(0, b), doc.substr(0, b));
  EXPECT_EQ(out->substr(out->size() - (doc.size() - e)), doc.substr(e));
  EXPECT_NE(out->find("\n| a |\n| --- |\n| 1 |\n<!-- /kvgrid:results -->"), std::string::npos);
  EXPECT_EQ(out->find("old table"), std::string::npos);
  EXPECT_NE(out->find("keep me"), std::string::npos);
}

TEST(ReadmeSectionTest, Idempotent) {
  auto once = ReplaceMarkedSection(kReadme, "results", "content\n");
  ASSERT_TRUE(once.ok());
  auto twice = ReplaceMarkedSection(*once, "results", "content\n");
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(*once, *twice);
}

TEST(ReadmeSectionTest, ClearErrors) {
  auto missing = ReplaceMarkedSection("# nothing here\n", "results", "x", "README.md");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("README.md"), absl::string_view::npos);
  EXPECT_NE(missing.status().message().find("<!-- kvgrid:results -->"), absl::string_view::npos);

  auto no_end = ReplaceMarkedSection("<!-- kvgrid:results -->\n", "results", "x");
  ASSERT_FALSE(no_end.ok());
  EXPECT_NE(no_end.status().message().find("<!-- /kvgrid:results -->"), absl::string_view::npos);

  auto reversed =
      ReplaceMarkedSection("<!-- /kvgrid:results -->\n<!-- kvgrid:results -->\n", "results", "x");
  ASSERT_FALSE(reversed.ok());
  EXPECT_NE(reversed.status().message().find("before"), absl::string_view::npos);

  auto twice = ReplaceMarkedSection(
      "<!-- kvgrid:r -->\n<!-- /kvgrid:r -->\n<!-- kvgrid:r -->\n<!-- /kvgrid:r -->\n", "r", "x");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("more than once"), absl::string_view::npos);

  EXPECT_FALSE(ReplaceMarkedSection(kReadme, "", "x").ok());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ReadmeSectionTest, RewritesFileInPlaceIdempotently) {
  auto dir = std::filesystem::path(::testing::TempDir()) / "readme_section_test";
  std::filesystem::create_directories(dir);
  std::string path = (dir / "README.md").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << kReadme;
  }
  bool changed = false;
  ASSERT_TRUE(RewriteReadmeSection(path, "results", "new\n", &changed).ok());
  EXPECT_TRUE(changed);
  std::string first = ReadFile(path);
  ASSERT_TRUE(RewriteReadmeSection(path, "results", "new\n", &changed).ok());
  EXPECT_FALSE(changed);
  EXPECT_EQ(ReadFile(path), first);
  EXPECT_EQ(first, *ReplaceMarkedSection(kReadme, "results", "new\n"));
  EXPECT_FALSE(std::filesystem::exists(path + ".kvgrid-tmp"));

  auto missing = RewriteReadmeSection((dir / "nope.md").string(), "results", "x");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("nope.md"), absl::string_view::npos);
  auto no_marker = RewriteReadmeSection(path, "absent", "x");
  EXPECT_FALSE(no_marker.ok());
  EXPECT_EQ(ReadFile(path), first);  // untouched on error
}

}  // namespace
}  // namespace kvgrid::reports
