# frozen_string_literal: true

# Stand-in Mastodon (see README.md in the source tree). Same shape as Mastodon's lib/mastodon/version.rb,
# so tools that read the version (or hash this file) see a 4.3.x release.
module Mastodon
  module Version
    module_function

    def major
      4
    end

    def minor
      3
    end

    def patch
      8
    end

    def default_prerelease
      ''
    end

    def prerelease
      ENV['MASTODON_VERSION_PRERELEASE'].presence || default_prerelease
    end

    def build_metadata
      ENV.fetch('MASTODON_VERSION_METADATA', nil)
    end

    def to_a
      [major, minor, patch].compact
    end

    def to_s
      components = [to_a.join('.')]
      components << "-#{prerelease}" if prerelease.present?
      components << "+#{build_metadata}" if build_metadata.present?
      components.join
    end
  end
end
