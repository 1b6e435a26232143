// Writes the seed corpus of fuzz_schedule_csv into the folder given as the first argument: every
// built-in schedule for a few (p, m, v), in both CSV forms, and a few hand-made files in the
// spellings the reader accepts (CRLF, spaces, quotes, a custom placement). Used by scripts/fuzz.sh.
#include <cstdio>
#include <fstream>
#include <string>

#include <ppipe/schedule/csv.hpp>
#include <ppipe/schedule/generate.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <seed folder>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int written = 0;
  const auto put = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name, std::ios::binary) << text;
    ++written;
  };
  for (const std::string_view name : ppipe::schedule_names) {
    for (const ppipe::schedule_params params : {ppipe::schedule_params{1, 1, 1}, {2, 2, 1}, {2, 3, 1}, {3, 3, 1},
                                                {2, 4, 2}, {3, 6, 2}, {4, 4, 2}, {2, 2, 3}}) {
      ppipe::schedule s;
      try {
        s = ppipe::make_schedule(name, params);
      } catch (const ppipe::error&) {
        continue;  // not a valid (p, m, v) for this schedule
      }
      const std::string stem = std::string(name) + "_p" + std::to_string(params.ranks) + "_m" +
                               std::to_string(params.microbatches) + "_v" + std::to_string(params.virtual_stages);
      put(stem + "_compute.csv", ppipe::to_csv(s));
      put(stem + "_comms.csv", ppipe::to_csv(s, {true}));
    }
  }
  put("crlf_spaces.csv", " 0F0 , 0F1 ,, 0B0 ,0F2,0B1,,0B2\r\n,1F0,1B0,1F1,1B1,1F2,1B2\r\n\r\n");
  put("quoted.csv", "\"0F0\",\"1F0\"\n");
  put("v_shape.csv", "0F0,3F0,3B0,0B0\n1F0,2F0,2B0,1B0\n");
  put("split_backward.csv", "0F0,0I0,0W0\n,1F0,1I0,1W0\n");
  std::printf("%d seeds in %s\n", written, dir.c_str());
}
