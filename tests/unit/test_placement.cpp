#include <vector>

#include <catch.hpp>
#include <ppipe/ppipe.hpp>

TEST_CASE("looped placement puts stage s on rank s % p, as Megatron interleaves") {
  const auto place = ppipe::placement::looped(4, 3);
  CHECK(place.num_ranks() == 4);
  CHECK(place.num_stages() == 12);
  CHECK(place.style() == "looped");
  for (int s = 0; s < 12; ++s) {
    CHECK(place.rank_of(s) == s % 4);
    CHECK(place.chunk_of(s) == s / 4);
  }
  const auto on_rank_1 = place.stages_on(1);
  CHECK(std::vector<int>(on_rank_1.begin(), on_rank_1.end()) == std::vector<int>{1, 5, 9});
  CHECK(place.crosses_after(3));
  CHECK(ppipe::placement::looped(1, 3).crosses_after(0) == false);
}

TEST_CASE("custom placements number each rank's stages as chunks") {
  const auto place = ppipe::placement::custom({0, 0, 1, 1, 0}, 2);
  CHECK(place.chunk_of(4) == 2);
  CHECK(place.chunk_of(3) == 1);
  CHECK_FALSE(place.crosses_after(0));
  CHECK(place.crosses_after(1));
  CHECK(place == ppipe::placement::custom({0, 0, 1, 1, 0}, 2));
  CHECK_FALSE(place == ppipe::placement::looped(2, 2));
}

TEST_CASE("bad placements are refused with the value and the fix") {
  using ppipe_test::contains;
  CHECK_THROWS_WITH(ppipe::placement::looped(0), contains("ranks=0") && contains("ranks >= 1"));
  CHECK_THROWS_WITH(ppipe::placement::looped(2, 0), contains("v=0"));
  CHECK_THROWS_WITH(ppipe::placement::custom({0, 2}, 2), contains("stage 1 is placed on rank 2"));
  CHECK_THROWS_WITH(ppipe::placement::custom({0, 0}, 2), contains("rank 1 holds no stage"));
  CHECK_THROWS_WITH(ppipe::placement::custom({}, 1), contains("0 stages"));
  const auto place = ppipe::placement::looped(2);
  CHECK_THROWS_WITH(place.rank_of(2), contains("stage 2 is outside 0..1"));
  CHECK_THROWS_WITH(place.stages_on(-1), contains("rank -1"));
  CHECK_THROWS_AS(place.chunk_of(-1), ppipe::error);
}
