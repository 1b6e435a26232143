// bf16 activations and an i32 tensor cross every stage boundary of a pipeline on the host backend:
// training is bitwise the unpipelined run over the same microbatches, for GPipe, 1F1B and
// interleaved 1F1B, losses and parameters alike.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "mixed_dtype_model.hpp"
#include "ppipe/pipeline/pipeline.hpp"
#include "ppipe/schedule/gpipe.hpp"
#include "ppipe/schedule/interleaved_1f1b.hpp"
#include "ppipe/schedule/one_f_one_b.hpp"
#include "reference.hpp"

namespace {

template <class Schedule>
void trains_like_unpipelined(int p, int v) {
  const int m = 2 * p;
  const int width = 5;
  const float lr = 0.05f;
  mixed::model piped(8, width);
  mixed::model plain(8, width);
  ppipe::pipeline_options o;
  o.ranks = p;
  o.microbatches = m;
  o.virtual_stages = v;
  ppipe::pipeline<mixed::model, Schedule> pipe(piped, o, mixed::loss, [&](const ppipe::stage_info& s) {
    piped.sgd(s.first_layer, s.end_layer, lr);
  });
  for (int step = 0; step < 3; ++step) {
    INFO(Schedule::name << " p=" << p << " v=" << v << " step " << step);
    const std::int64_t rows = 3 * m + 1;  // uneven microbatches
    const ppipe::payload x = mixed::batch(rows, width, step);
    const ppipe::payload y = mixed::target(rows, width, step);
    const double got = pipe.train_step(x, y);
    const double want = reference::accumulate(plain, x, y, m, mixed::loss);
    plain.sgd(0, plain.num_layers(), lr);
    REQUIRE(std::isfinite(want));
    CHECK(got == want);  // bitwise
    CHECK(piped.weights() == plain.weights());
    CHECK(piped.biases() == plain.biases());
  }
  // Inference hands back the last layer's payload, dtypes and all.
  const ppipe::payload x = mixed::batch(2 * p + 1, width, 7);
  const ppipe::payload out = pipe.infer(x);
  REQUIRE(out.size() == 2);
  CHECK(out[0].shape() == ppipe::shape{2 * p + 1, width});
  CHECK(out[1] == x[1]);
  const auto acts = reference::forward(plain, x, 0, ppipe::pass_mode::inference);
  CHECK(out == acts.back());
}

}  // namespace

TEST_CASE("bf16 and i32 payloads cross host stage boundaries bitwise: GPipe", "[dtype][numerics]") {
  trains_like_unpipelined<ppipe::schedules::gpipe>(4, 1);
  trains_like_unpipelined<ppipe::schedules::gpipe>(2, 1);
}

TEST_CASE("bf16 and i32 payloads cross host stage boundaries bitwise: 1F1B", "[dtype][numerics]") {
  trains_like_unpipelined<ppipe::schedules::one_f_one_b>(4, 1);
  trains_like_unpipelined<ppipe::schedules::one_f_one_b>(3, 1);
}

TEST_CASE("bf16 and i32 payloads cross host stage boundaries bitwise: interleaved 1F1B, v=2",
          "[dtype][numerics]") {
  trains_like_unpipelined<ppipe::schedules::interleaved_1f1b>(4, 2);
  trains_like_unpipelined<ppipe::schedules::interleaved_1f1b>(2, 2);
}
