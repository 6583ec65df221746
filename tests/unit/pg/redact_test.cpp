#include <gtest/gtest.h>

#include "edge/pg/connection.hpp"

namespace edge::pg {
namespace {

TEST(Redact, KeyValuePasswordsAreHidden) {
  EXPECT_EQ(redact("host=db1 password=s3cret dbname=x"), "host=db1 password=*** dbname=x");
  EXPECT_EQ(redact("host=db1 password = 's3 cr\\'et' user=u"), "host=db1 password = *** user=u");
  EXPECT_EQ(redact("password=abc"), "password=***");
}

TEST(Redact, UriUserInfoAndQueryPasswordsAreHidden) {
  EXPECT_EQ(redact("postgres://edge:s3cret@db1:5432,db2/be?sslmode=require"),
            "postgres://edge:***@db1:5432,db2/be?sslmode=require");
  EXPECT_EQ(redact("postgresql://db1/be?user=u&password=p&target_session_attrs=read-write"),
            "postgresql://db1/be?user=u&password=***&target_session_attrs=read-write");
}

TEST(Redact, StringsWithoutPasswordsAreUnchanged) {
  EXPECT_EQ(redact("host=127.0.0.1 port=5432 dbname=be user=postgres"),
            "host=127.0.0.1 port=5432 dbname=be user=postgres");
  EXPECT_EQ(redact("postgres://edge@db1/be"), "postgres://edge@db1/be");
  EXPECT_EQ(redact("passwordless=1"), "passwordless=1");
}

TEST(Literal, QuotesAreDoubled) {
  EXPECT_EQ(literal("it's"), "'it''s'");
}

}  // namespace
}  // namespace edge::pg
