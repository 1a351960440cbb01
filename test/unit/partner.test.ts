import { describe, expect, it } from "vitest";
import { createPartnerAuth } from "../../lib/auth/partner.js";

const basic = (s: string) => `Basic ${Buffer.from(s).toString("base64")}`;

describe("partner auth", () => {
  const check = createPartnerAuth([
    { key: "acme", secret: "acme-secret-0123456789" },
    { key: "beta", secret: "beta:secret:with:colons" },
  ]);

  it("returns the partner key for correct Basic credentials", () => {
    expect(check(basic("acme:acme-secret-0123456789"))).toBe("acme");
    // Only the first colon separates key and secret.
    expect(check(basic("beta:beta:secret:with:colons"))).toBe("beta");
  });

  it("refuses a wrong secret, another partner's secret or an unknown key", () => {
    expect(check(basic("acme:acme-secret-012345678"))).toBeUndefined();
    expect(check(basic("acme:"))).toBeUndefined();
    expect(check(basic("acme:beta:secret:with:colons"))).toBeUndefined();
    expect(check(basic("nobody:acme-secret-0123456789"))).toBeUndefined();
  });

  it("refuses missing or malformed headers", () => {
    expect(check(null)).toBeUndefined();
    expect(check("")).toBeUndefined();
    expect(check("Bearer abc")).toBeUndefined();
    expect(
      check(`basic ${Buffer.from("acme:acme-secret-0123456789").toString("base64")}`),
    ).toBeUndefined();
    expect(check(basic("no-colon-at-all"))).toBeUndefined();
    expect(check(basic(":acme-secret-0123456789"))).toBeUndefined();
    expect(check("Basic %%%not-base64%%%")).toBeUndefined();
  });

  it("refuses everything when no partner is configured", () => {
    const none = createPartnerAuth([]);
    expect(none(basic("acme:acme-secret-0123456789"))).toBeUndefined();
  });
});
