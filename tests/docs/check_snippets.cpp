// Keeps the docs honest: every ```cpp and ```cmake block in the given Markdown files must appear,
// line for line (leading and trailing blanks ignored), in one of the given source files, which the
// build compiles or the package tests run. Usage: check_snippets --docs A.md B.md --sources x y ...
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(trim(line));
  return out;
}

bool contains(const std::vector<std::string>& haystack, const std::vector<std::string>& needle) {
  if (needle.empty()) return true;
  for (std::size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
    std::size_t k = 0;
    while (k < needle.size() && haystack[i + k] == needle[k]) ++k;
    if (k == needle.size()) return true;
  }
  return false;
}

}  // namespace

int check(int argc, char** argv) {
  std::vector<std::string> docs, sources;
  std::vector<std::string>* into = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--docs") into = &docs;
    else if (arg == "--sources") into = &sources;
    else if (into) into->push_back(arg);
  }
  std::vector<std::vector<std::string>> source_lines;
  for (const auto& s : sources) source_lines.push_back(lines_of(s));
  int checked = 0, failed = 0;
  for (const auto& doc : docs) {
    const auto lines = lines_of(doc);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i] != "```cpp" && lines[i] != "```cmake") continue;
      const std::size_t start = i + 1;
      std::vector<std::string> block;
      for (++i; i < lines.size() && lines[i] != "```"; ++i) {
        if (!lines[i].empty()) block.push_back(lines[i]);
      }
      // Compare without blank lines on either side.
      bool found = false;
      for (const auto& src : source_lines) {
        std::vector<std::string> compact;
        for (const auto& l : src) if (!l.empty()) compact.push_back(l);
        found = found || contains(compact, block);
      }
      ++checked;
      if (!found) {
        ++failed;
        std::cout << doc << ":" << start << ": snippet not found in any compiled source:\n";
        for (const auto& l : block) std::cout << "    " << l << "\n";
      }
    }
  }
  std::cout << checked << " snippets checked, " << failed << " not found\n";
  return failed == 0 && checked > 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return check(argc, argv);
  } catch (const std::exception& e) {
    std::cout << "check_snippets: " << e.what() << "\n";
    return 1;
  }
}
