package domain

import (
	"fmt"
	"unicode/utf8"
)

// Limits on identity values, in bytes. They bound what reaches the Engine.
const (
	MaxUserIDLen = 256
	MaxEmailLen  = 254 // RFC 5321 path limit minus the angle brackets
)

// Identity is what a verified token says about its holder, before validation.
// Adapters fill it from claims; NewUser turns it into a User or refuses it.
type Identity struct {
	UserID string
	Email  string
}

// User is a validated identity: the values the Engine receives, byte for byte.
type User struct {
	ID    string
	Email string
}

// NewUser validates an identity. The user id must be a non-empty UTF-8 string of
// at most MaxUserIDLen bytes without control characters; the email an RFC 5322
// addr-spec of at most MaxEmailLen bytes. Values are never trimmed or rewritten:
// what is valid goes to the Engine exactly as the token carried it.
// Errors wrap ErrInvalidPayload.
func NewUser(id Identity) (User, error) {
	if err := checkText(id.UserID, MaxUserIDLen); err != nil {
		return User{}, fmt.Errorf("%w: user id %s", ErrInvalidPayload, err)
	}
	if err := checkText(id.Email, MaxEmailLen); err != nil {
		return User{}, fmt.Errorf("%w: email %s", ErrInvalidPayload, err)
	}
	if !isAddrSpec(id.Email) {
		return User{}, fmt.Errorf("%w: email is not an addr-spec", ErrInvalidPayload)
	}
	return User{ID: id.UserID, Email: id.Email}, nil
}

func checkText(s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("is empty")
	case len(s) > max:
		return fmt.Errorf("is longer than %d bytes", max)
	case !utf8.ValidString(s):
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("has a control character")
		}
	}
	return nil
}
