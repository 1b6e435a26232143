// Keeps the docs honest: every ```cpp and ```cmake block in the given Markdown files must appear,
// line for line (leading and trailing blanks ignored), in one of the given source files, which the
// build compiles or the package tests run; other blocks are commands or output, and a text block
// that holds code is refused. Usage: check_snippets --docs A.md B.md --sources x y ...
#include <fstream>
#include <iostream>
#include <regex>
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

bool allowed(const std::string& lang) {
  for (const char* ok : {"sh", "text", "csv", "json"}) {
    if (lang == ok) return true;
  }
  return false;
}

// C++ or CMake, as opposed to a program's output or a grammar: a statement, an include, a
// ppipe call or template, or a CMake command. Output that quotes such a line would need another label.
bool looks_like_code(const std::string& line) {
  if (line.empty()) return false;
  static const std::regex ppipe_call(R"(ppipe::[A-Za-z_:]+\s*[<(])");  // a call or a template, not a name
  if (line.rfind("#include", 0) == 0 || std::regex_search(line, ppipe_call)) return true;
  // Output may end a clause with ';', so a statement must end in ");" or "};" or assign.
  const auto ends_with = [&](const std::string& tail) {
    return line.size() >= tail.size() && line.compare(line.size() - tail.size(), tail.size(), tail) == 0;
  };
  if (ends_with(");") || ends_with("};") || ends_with("{") || line.rfind("using ", 0) == 0) return true;
  if (ends_with(";") && line.find(" = ") != std::string::npos) return true;
  for (const char* command : {"find_package(", "target_link_libraries(", "add_executable(", "add_subdirectory("}) {
    if (line.rfind(command, 0) == 0) return true;
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
      if (lines[i].rfind("```", 0) != 0) continue;
      const std::string lang = lines[i].substr(3);
      if (lang != "cpp" && lang != "cmake") {
        // Other fences hold commands or output, never code that would escape the check above.
        const std::size_t fence = i;
        if (!allowed(lang)) {
          ++failed;
          std::cout << doc << ":" << fence + 1 << ": fence \"```" << lang << "\": label it cpp, cmake, sh, text, csv "
                    << "or json\n";
        }
        for (++i; i < lines.size() && lines[i] != "```"; ++i) {
          if (lang == "text" && looks_like_code(lines[i])) {
            ++failed;
            std::cout << doc << ":" << i + 1 << ": code in a text block (" << lines[i]
                      << "): make it a ```cpp or ```cmake block copied from a compiled file\n";
          }
        }
        continue;
      }
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
  std::cout << checked << " snippets checked, " << failed << " problems\n";
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
