package addr

// IFAFTentative is ifaFTentative, for the test that checks it against
// x/sys/unix.
const IFAFTentative = ifaFTentative
