// Keeps the docs navigable: every relative link and image in the given Markdown files must name a
// file that exists, and a #fragment must name a heading of its page, anchored as GitHub anchors
// them (lower case, punctuation dropped, spaces to hyphens, -1, -2 ... for repeats).
// Usage: check_links A.md B.md ...
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::vector<std::string> lines_of(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool is_fence(const std::string& line) {
  const auto first = line.find_first_not_of(' ');
  return first != std::string::npos && line.compare(first, 3, "```") == 0;
}

std::string anchor_of(const std::string& heading) {
  std::string out;
  for (const char c : heading) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || u >= 0x80) {
      out += static_cast<char>(std::tolower(u));
    } else if (c == ' ') {
      out += '-';
    }
  }
  return out;
}

// The anchors of a page's headings, outside code blocks.
std::set<std::string> anchors_of(const fs::path& page) {
  std::set<std::string> out;
  std::map<std::string, int> seen;
  bool in_code = false;
  for (const auto& line : lines_of(page)) {
    if (is_fence(line)) in_code = !in_code;
    if (in_code || line.empty() || line[0] != '#') continue;
    const auto text = line.find_first_not_of('#');
    if (text == std::string::npos || line[text] != ' ') continue;
    const std::string base = anchor_of(line.substr(text + 1));
    const int n = seen[base]++;
    out.insert(n == 0 ? base : base + "-" + std::to_string(n));
  }
  return out;
}

// The targets of [text](target) and ![alt](target) on a line, outside `code spans`.
std::vector<std::string> targets_on(const std::string& line) {
  std::vector<std::string> out;
  bool in_span = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '`') in_span = !in_span;
    if (in_span || line[i] != ']' || i + 1 >= line.size() || line[i + 1] != '(') continue;
    const auto close = line.find(')', i + 2);
    if (close == std::string::npos) continue;
    std::string target = line.substr(i + 2, close - i - 2);
    if (const auto space = target.find(' '); space != std::string::npos) target.resize(space);  // a title
    out.push_back(target);
    i = close;
  }
  return out;
}

bool external(const std::string& target) {
  return target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0 || target.rfind("mailto:", 0) == 0;
}

}  // namespace

int check(int argc, char** argv) {
  int checked = 0, failed = 0;
  for (int a = 1; a < argc; ++a) {
    const fs::path doc = argv[a];
    const auto lines = lines_of(doc);
    bool in_code = false;
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (is_fence(lines[i])) in_code = !in_code;
      if (in_code) continue;
      for (const auto& target : targets_on(lines[i])) {
        if (target.empty() || external(target)) continue;
        ++checked;
        const auto hash = target.find('#');
        const std::string file = target.substr(0, hash);
        const fs::path resolved = file.empty() ? doc : doc.parent_path() / file;
        std::string problem;
        if (!fs::exists(resolved)) {
          problem = "no such file: " + resolved.lexically_normal().string();
        } else if (hash != std::string::npos && resolved.extension() == ".md") {
          const std::string fragment = target.substr(hash + 1);
          if (anchors_of(resolved).count(fragment) == 0) {
            problem = "no heading with anchor #" + fragment + " in " + resolved.lexically_normal().string();
          }
        }
        if (!problem.empty()) {
          ++failed;
          std::cout << doc.string() << ":" << i + 1 << ": link (" << target << "): " << problem << "\n";
        }
      }
    }
  }
  std::cout << checked << " links checked, " << failed << " broken\n";
  return failed == 0 && checked > 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    return check(argc, argv);
  } catch (const std::exception& e) {
    std::cout << "check_links: " << e.what() << "\n";
    return 1;
  }
}
