// A schedule given to the pipeline as a value (pipeline_options::schedule): a schedule written to
// CSV and read back trains with the same bits as the built-in tag it came from; the options must
// agree with it; a schedule the model cannot run is refused when the pipeline is built.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ppipe/layers/layers.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/csv.hpp"
#include "ppipe/schedule/generate.hpp"
#include "toy_model.hpp"

namespace {

using ppipe::layers::sequential;

ppipe::pipeline_options options(int p, int m, int v = 1) {
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  return o;
}

ppipe::payload ramp(std::int64_t rows, int cols, float salt) {
  ppipe::payload out{ppipe::host_tensor(ppipe::shape{rows, cols})};
  for (std::size_t i = 0; i < out[0].size(); ++i) out[0][i] = 0.01f * static_cast<float>(i % 17) - 0.05f + salt;
  return out;
}

std::vector<std::vector<float>> copy(const std::vector<std::span<const float>>& spans) {
  std::vector<std::vector<float>> out;
  for (const auto& s : spans) out.emplace_back(s.begin(), s.end());
  return out;
}

// The schedule of tag S for (p, m, v), written with save_csv() and read back with load_csv().
template <class S>
ppipe::schedule through_a_file(int p, int m, int v) {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("ppipe-schedule-value-" + std::string(S::name) + ".csv");
  ppipe::save_csv(path.string(), S::generate({p, m, v}));
  ppipe::schedule s = ppipe::load_csv(path.string());
  std::filesystem::remove(path);
  return s;
}

// Trains the MLP through a pipeline of tag S and through one given `value` with the options left
// at their defaults, and checks that losses and parameters are bitwise equal.
template <class S>
void check_same_bits(const ppipe::schedule& value, int p, int m, int v) {
  const std::vector<int> widths{6, 12, 12, 12, 12, 3};
  sequential by_tag = sequential::mlp(widths, 5);
  sequential by_value = sequential::mlp(widths, 5);
  const ppipe::layers::sgd sgd(0.05f);
  ppipe::pipeline<sequential, S> a(by_tag, options(p, m, v), ppipe::layers::mse_loss{},
                                   [&](const ppipe::stage_info& st) { sgd.step(by_tag, st); });
  ppipe::pipeline_options o;
  o.schedule = value;
  ppipe::pipeline<sequential> b(by_value, o, ppipe::layers::mse_loss{},
                                [&](const ppipe::stage_info& st) { sgd.step(by_value, st); });
  CHECK(b.options().ranks == p);
  CHECK(b.options().microbatches == m);
  CHECK(b.options().virtual_stages == v);
  CHECK(b.training_schedule().name == value.name);
  CHECK(b.split().sizes() == a.split().sizes());
  CHECK(b.inference_schedule().place.rank_table() == a.inference_schedule().place.rank_table());
  for (int step = 0; step < 3; ++step) {
    INFO(S::name << " p=" << p << " m=" << m << " step " << step);
    const ppipe::payload x = ramp(4 * m + 1, widths.front(), 0.1f * static_cast<float>(step));
    const ppipe::payload y = ramp(4 * m + 1, widths.back(), -0.2f * static_cast<float>(step));
    CHECK(a.train_step(x, y) == b.train_step(x, y));
    CHECK(copy(by_tag.parameters()) == copy(by_value.parameters()));
  }
  const ppipe::payload x = ramp(2 * m, widths.front(), 0.5f);
  CHECK(a.infer(x) == b.infer(x));
}

std::string message_of(const std::function<void()>& f, const std::string& id) {
  try {
    f();
  } catch (const ppipe::error& e) {
    CHECK(e.id() == id);
    return std::string(e.message());
  }
  FAIL("no ppipe::error was thrown");
  return {};
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a schedule read back from CSV trains with the bits of the built-in tag it came from") {
  const ppipe::schedule one_f_one_b = through_a_file<ppipe::schedules::one_f_one_b>(3, 6, 1);
  CHECK(one_f_one_b.name == "csv");
  check_same_bits<ppipe::schedules::one_f_one_b>(one_f_one_b, 3, 6, 1);
  // Zero bubble: I and W actions, run by the MLP's split backward.
  const ppipe::schedule zb_h1 = through_a_file<ppipe::schedules::zb_h1>(3, 6, 1);
  REQUIRE(zb_h1.splits_backward());
  check_same_bits<ppipe::schedules::zb_h1>(zb_h1, 3, 6, 1);
  check_same_bits<ppipe::schedules::zb_v>(through_a_file<ppipe::schedules::zb_v>(2, 4, 2), 2, 4, 2);
  // DualPipeV's pairs ("0F3+") survive the file.
  const ppipe::schedule dualpipe_v = through_a_file<ppipe::schedules::dualpipe_v>(2, 4, 2);
  REQUIRE(std::any_of(dualpipe_v.ranks[0].begin(), dualpipe_v.ranks[0].end(), [](const ppipe::action& a) { return a.paired; }));
  check_same_bits<ppipe::schedules::dualpipe_v>(dualpipe_v, 2, 4, 2);
}

TEST_CASE("a schedule chosen by name at run time runs through one pipeline type") {
  for (const char* name : {"gpipe", "1f1b", "zb_h1"}) {
    const ppipe::schedule s = ppipe::make_schedule(name, {2, 4, 1});
    sequential model = sequential::mlp({4, 8, 8, 2}, 3);
    ppipe::pipeline_options o = options(2, 4);  // repeating the schedule's values is fine
    o.schedule = s;
    ppipe::pipeline<sequential> pipe(model, o, ppipe::layers::mse_loss{});
    CHECK(pipe.training_schedule().name == name);
    CHECK(pipe.train_step(ramp(8, 4, 0.0f), ramp(8, 2, 0.3f)) > 0.0);
  }
}

TEST_CASE("options that disagree with a given schedule are refused, naming both values") {
  toy::model model(8);
  const ppipe::schedule s = ppipe::make_schedule("1f1b", {2, 4, 1});
  const auto build = [&](ppipe::pipeline_options o) {
    o.schedule = s;
    ppipe::pipeline<toy::model> pipe(model, o, toy::loss);
  };
  CHECK(contains(message_of([&] { build(options(4, 4)); }, "ppipe.invalid_argument"),
                 "pipeline_options::ranks is 4 but pipeline_options::schedule \"1f1b\" has p=2; set ranks to 2, or "
                 "leave it at its default"));
  CHECK(contains(message_of([&] { build(options(2, 8)); }, "ppipe.invalid_argument"),
                 "pipeline_options::microbatches is 8 but pipeline_options::schedule \"1f1b\" has m=4; set "
                 "microbatches to 4"));
  CHECK(contains(message_of([&] { build(options(2, 4, 2)); }, "ppipe.invalid_argument"),
                 "pipeline_options::virtual_stages is 2 but pipeline_options::schedule \"1f1b\" has v=1"));
  CHECK_NOTHROW(build(options(1, 1)));  // the defaults: the schedule's values
}

TEST_CASE("a given schedule that is no training schedule, or that the pipeline cannot place, is refused") {
  toy::model model(8);
  ppipe::pipeline_options o;
  o.schedule = ppipe::make_schedule("forward_only", {2, 4, 1});
  CHECK(contains(message_of([&] { ppipe::pipeline<toy::model> p(model, o, toy::loss); }, "ppipe.invalid_argument"),
                 "pipeline_options::schedule \"forward_only\" is an inference (forward-only) schedule"));
  // Rank 0 holds two stages, rank 1 one.
  o.schedule = ppipe::schedule{"uneven", ppipe::placement::custom({0, 0, 1}, 2), 2, ppipe::schedule_mode::training,
                               {{}, {}}};
  CHECK(contains(message_of([&] { ppipe::pipeline<toy::model> p(model, o, toy::loss); }, "ppipe.invalid_argument"),
                 "puts 3 stages on 2 ranks, not the same number on each"));
  // Not a valid schedule: every forward is missing.
  o.schedule = ppipe::schedule{"empty", ppipe::placement::looped(2), 2, ppipe::schedule_mode::training, {{}, {}}};
  try {
    ppipe::pipeline<toy::model> p(model, o, toy::loss);
    FAIL("an empty schedule was accepted");
  } catch (const ppipe::error& e) {
    CHECK(e.id() == "ppipe.invalid_schedule");
  }
}

// toy::model with its split backward hidden: a model with a full backward only.
struct full_backward_model : toy::model {
  using toy::model::model;
  void backward_input() = delete;
  void backward_weight() = delete;
};

TEST_CASE("a split-backward schedule with a model without backward_input/backward_weight is refused when built") {
  static_assert(!ppipe::model_has_split_backward<full_backward_model, ppipe::host_tensor>);
  static_assert(ppipe::model_has_split_backward<toy::model, ppipe::host_tensor>);
  static_assert(ppipe::splits_backward_v<ppipe::schedules::zb_h1> && ppipe::splits_backward_v<ppipe::schedules::zb_v> &&
                ppipe::splits_backward_v<ppipe::schedules::dualpipe_v>);
  static_assert(!ppipe::splits_backward_v<ppipe::schedules::one_f_one_b>);
  full_backward_model model(8);
  ppipe::pipeline_options o;
  o.schedule = ppipe::make_schedule("zb_h1", {2, 4, 1});
  const std::string message =
      message_of([&] { ppipe::pipeline<full_backward_model> p(model, o, toy::loss); }, "ppipe.unsupported");
  CHECK(contains(message, "the schedule \"zb_h1\" splits the backward into input-gradient (I) and "
                          "weight-gradient (W)"));
  CHECK(contains(message, "give the model both"));
}

TEST_CASE("a schedule's fingerprint follows its actions and placement, not its name") {
  const ppipe::schedule a = ppipe::make_schedule("1f1b", {2, 4, 1});
  ppipe::schedule renamed = a;
  renamed.name = "csv";
  CHECK(ppipe::detail::fingerprint(a) == ppipe::detail::fingerprint(renamed));
  CHECK(ppipe::detail::fingerprint(a) != ppipe::detail::fingerprint(ppipe::make_schedule("gpipe", {2, 4, 1})));
  CHECK(ppipe::detail::fingerprint(a) != ppipe::detail::fingerprint(ppipe::make_schedule("1f1b", {2, 5, 1})));
  ppipe::schedule moved = a;  // one action moved from the end of rank 0's list to the start of rank 1's
  moved.ranks[1].insert(moved.ranks[1].begin(), moved.ranks[0].back());
  moved.ranks[0].pop_back();
  CHECK(ppipe::detail::fingerprint(a) != ppipe::detail::fingerprint(moved));
}
