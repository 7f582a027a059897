// Rewrites one marked section of a markdown file in place, leaving every other byte unchanged:
//
//   <!-- kvgrid:NAME -->
//   ...generated content, replaced on every run...
//   <!-- /kvgrid:NAME -->
//
// Re-running with the same content yields the same file (idempotent).
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvgrid::reports {

std::string SectionBeginMarker(absl::string_view name);  // "<!-- kvgrid:NAME -->"
std::string SectionEndMarker(absl::string_view name);    // "<!-- /kvgrid:NAME -->"

// Returns `document` with the text between the two markers replaced by "\n" + content (+ "\n" if
// content does not end with one). Errors (InvalidArgument / NotFound) when a marker is missing,
// repeated, or the end marker precedes the begin marker; `source` names the file in messages.
absl::StatusOr<std::string> ReplaceMarkedSection(absl::string_view document,
                                                 absl::string_view name, absl::string_view content,
                                                 absl::string_view source = "document");

// Reads `path`, replaces the section, and writes the file back (via a temporary file and rename;
// not written at all when nothing changes). Sets *changed when given.
absl::Status RewriteReadmeSection(const std::string& path, const std::string& name,
                                  const std::string& content, bool* changed = nullptr);

}  // namespace kvgrid::reports
